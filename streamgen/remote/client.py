"""Remote streams: `sg.connect(url)` and streams with `sg.Stream`'s API.

A client holds ONE WebSocket connection to a `streamgen serve` server and
multiplexes all its streams over it: every request waiting when the
previous message's reply arrives goes out in the next message, so many
threads (or asyncio tasks) stepping their own streams share one message per
round trip, and the server steps them in one batched call.

Two flavours over one implementation:

- `sg.connect(url)` -> `Client`: blocking calls, safe from many threads (an
  event loop runs in a background thread).
- `await AsyncClient.connect(url)` -> `AsyncClient`: `await s.step(x)`, for
  asyncio gateways.

A remote stream's state is a plain value, as for `sg.Stream`: `get_state()`
gives the same numpy nest, `set_state()` takes one from `sg.Stream`,
`sg.LiteStream` or another remote stream of the same model (checked by the
model's fingerprint). If the connection is lost (a replica died), the next
request reconnects; a stream opened on the old connection must be restored
with `set_state(saved)` (or `reset()`) before it steps again.

Never imports TensorFlow (numpy and `websockets` only).
"""

import asyncio
import itertools
import json
import threading
import weakref
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from streamgen import checks
from streamgen import criteria as criteria_lib
from streamgen import randomness
from streamgen import samplers
from streamgen.remote import protocol
from streamgen.remote import wire
from streamgen.runtimes import base
from streamgen.runtimes.base import Runtime
from streamgen.stream import Stream

MAX_REPLY_BYTES = 256 << 20
DEFAULT_TIMEOUT_S = 30.0


class RemoteError(ValueError):
    """The server refused a request (its message says why)."""


class StreamLostError(ConnectionError):
    """The connection was lost (from its first error on: the calls that were
    waiting, and later the streams opened on it); `set_state` or `reset`
    revives a stream."""


def _closed_error():
    return ConnectionError("this client is closed")


def _check_timeout(timeout):
    return checks.non_negative_float("timeout", timeout, allow_zero=False)


def _urls(url):
    """`(ws_url, http_base)` from `ws://host:port[/v1/streams]`."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise checks.invalid("url", "a URL such as ws://127.0.0.1:8000/v1/streams", url)
    secure = parts.scheme in ("wss", "https")
    prefix = parts.path.rstrip("/")  # an application's route prefix, if any
    for suffix in (protocol.PATH, protocol.PATH.rsplit("/", 1)[0]):
        if prefix.endswith(suffix):
            prefix = prefix[: -len(suffix)]
            break
    ws_url = urllib.parse.urlunsplit(("wss" if secure else "ws", parts.netloc,
                                      prefix + protocol.PATH, parts.query, ""))
    http = urllib.parse.urlunsplit(("https" if secure else "http", parts.netloc, prefix,
                                    "", ""))
    return ws_url, http


def fetch_model_info(http_base, token=None, timeout=30.0):
    """`GET /v1/model` of a server: a dict (see `docs/serving.md`).

    Raises:
        PermissionError: the server wants a (different) token.
        ConnectionError: no server answers there.
    """
    request = urllib.request.Request(http_base + "/v1/model")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise PermissionError(
                f"{http_base}: the server needs a token (Authorization: Bearer); "
                f"{'the one given is wrong' if token else 'none was given'}") from None
        raise ConnectionError(f"{http_base}/v1/model: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(f"cannot reach a streamgen server at {http_base}: {reason}") from None


class AsyncClient:
    """A connection to a server, for asyncio code.

    Make one with `await AsyncClient.connect(url, token=None, timeout=30)`.

    Attributes:
        url: the WebSocket URL.
        model: what `GET /v1/model` answered (sizes, criteria, sampler,
            frame kind, fingerprint).
        input_size, output_size, trained_max_steps, frame_loss: from `model`.
        sampler: the server model's default sampler (`sg.samplers.Sampler`).
    """

    def __init__(self, url, token, model, timeout=DEFAULT_TIMEOUT_S):
        self.url, self.http = _urls(url)
        self.token = token
        self.timeout = _check_timeout(timeout)
        self.model = model
        self.input_size = int(model["input_size"])
        self.output_size = int(model["output_size"])
        self.trained_max_steps = int(model["trained_max_steps"])
        self.fingerprint = model["fingerprint"]
        self.state_sizes = model["state_sizes"]
        self.criteria = [criteria_lib.check_criterion_dict(c) for c in model["stop"]]
        self.frame_loss = model.get("frame_loss")  # None: a server that does not say
        self.sampler = samplers.get(model.get("sampler"))
        self._ids = itertools.count()
        self._pending = []  # (request text, future)
        self._inflight = []  # the batch whose reply is awaited
        self._wake = None
        self._sender = None
        self._ws = None
        self._generation = 0
        self._closed = False
        self._lock = None
        self.messages_sent = 0

    @classmethod
    async def connect(cls, url, token=None, timeout=DEFAULT_TIMEOUT_S):
        """Connects to a server at `url` (`ws://host:port`); see `sg.connect`."""
        _, http = _urls(url)
        timeout = _check_timeout(timeout)
        model = await asyncio.to_thread(fetch_model_info, http, token, timeout)
        client = cls(url, token, model, timeout)
        await client._connect()
        return client

    async def _connect(self):
        from websockets.asyncio.client import connect

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._ws = await connect(self.url, additional_headers=headers,
                                     max_size=MAX_REPLY_BYTES, compression=None,
                                     open_timeout=self.timeout)
        except Exception as error:  # noqa: BLE001  (websockets' many kinds)
            raise ConnectionError(f"cannot open {self.url}: {error}") from None
        self._generation += 1
        if self._wake is None:
            self._wake = asyncio.Event()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    async def ensure_connected(self):
        """Reconnects if the connection was lost (streams must then be revived)."""
        if self._closed:
            raise _closed_error()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._ws is None and not self._closed:
                await self._connect()

    def open_stream(self, stop=None, max_steps=None, sampler=None, seed=None):
        """A new remote stream (opened on the server with its first request).

        Args:
            stop: stop criteria (`sg.StopCriterion` objects or their
                dicts): any built-in criteria, a list of them or `[]`;
                criteria of the user's own classes must be the server
                model's, in order. `None`: the model's.
            max_steps: optional lower cap, in `[1, trained max_steps]`.
            sampler: how frames are drawn: a `sg.samplers.Sampler`, a name
                (`"top-k"`) or a config dict (`{"class_name": "TopK",
                "config": {"k": 3}}`); `None`: the server model's.
            seed: int in `[0, 2**32)`, the stream's random numbers; `None`
                draws a fresh one here (`randomness.new_seed()`), so that
                `reset()` and a reconnection replay the same draws. The
                stream's `seed` attribute holds it.

        Returns:
            An `AsyncRemoteStream`.

        Raises:
            TypeError, ValueError: as `sg.LiteStream(stop=..., max_steps=...,
                sampler=..., seed=...)` (a random sampler on `mse` frames
                names the frame kind).
        """
        if self._closed:
            raise _closed_error()
        if stop is None:
            criteria = criteria_lib.same_kind_criteria(None, self.criteria)  # copies
        else:
            criteria = criteria_lib.as_dicts(stop)
            criteria_lib.thresholds_row(criteria, criteria_lib.custom_of(self.criteria))  # checks
        if max_steps is not None:
            max_steps = checks.resolve_cap(self.trained_max_steps, max_steps)
        if sampler is not None:
            sampler = samplers.serialize(self.check_sampler(sampler))
        seed = randomness.new_seed() if seed is None else randomness.check_seed("seed", seed)
        return AsyncRemoteStream(self, f"s{next(self._ids)}", criteria, max_steps, sampler, seed)

    def check_sampler(self, sampler):
        """`sampler` resolved (`samplers.get`) and checked against the server
        model's frame kind; `ValueError` naming it otherwise."""
        if self.frame_loss is None:
            return samplers.get(sampler)
        return samplers.check_applies(sampler, self.frame_loss)

    async def request(self, text):
        """Sends one request (JSON text) in the next message; returns its item.

        Raises:
            TimeoutError: no reply within the client's `timeout`.
            StreamLostError: the connection was lost meanwhile.
            ConnectionError: the client is closed (also when it is closed
                while waiting).
        """
        if self._closed:
            raise _closed_error()
        if self._ws is None:
            await self.ensure_connected()
        future = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        self._wake.set()
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            if self._closed:
                raise _closed_error() from None
            raise TimeoutError(f"no reply from {self.url} within {self.timeout:g} s "
                               "(the client's timeout)") from None

    async def _send_loop(self):
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # let the other callers of this tick add theirs
            batch, self._pending = self._pending, []
            self._wake.clear()
            batch = [(text, future) for text, future in batch if not future.done()]
            if not batch:
                continue
            self._inflight = batch
            ws = self._ws
            try:
                await ws.send("[" + ",".join(text for text, _ in batch) + "]")
                self.messages_sent += 1
                reply = protocol.parse_reply(await ws.recv())
                if not isinstance(reply, list) or len(reply) != len(batch):
                    raise protocol.ProtocolError(
                        f"the server answered {len(reply) if isinstance(reply, list) else reply}"
                        f" items to {len(batch)} requests")
            except Exception as error:  # noqa: BLE001  (connection lost)
                self._ws = None
                self._inflight = []
                lost = StreamLostError(f"the connection to {self.url} was lost: {error}")
                for _, future in batch + self._pending:
                    if not future.done():
                        future.set_exception(lost)
                self._pending = []
                try:
                    await ws.close()
                except Exception:  # noqa: BLE001
                    pass
                return
            self._inflight = []
            for (_, future), item in zip(batch, reply):
                if not future.done():
                    future.set_result(item)

    async def close(self):
        """Closes the connection (the server drops this client's streams).

        Every call still waiting raises `ConnectionError`, and so does any
        later call, at once.
        """
        self._closed = True
        closed = _closed_error()
        for _, future in self._inflight + self._pending:
            if not future.done():
                future.set_exception(closed)
        self._inflight, self._pending = [], []
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._ws is not None:
            ws, self._ws = self._ws, None
            try:
                await asyncio.wait_for(ws.close(), min(self.timeout, 5.0))
            except Exception:  # noqa: BLE001  (a frozen or gone server: closed anyway)
                pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


class AsyncRemoteStream:
    """A stream on a server, with `sg.Stream`'s API as coroutines.

    One row (batch size 1). Make one with `client.open_stream(...)`.

    Attributes:
        sampler: the stream's sampler (`sg.samplers.Sampler`).
        seed: its seed (an int); `reset()` returns to it, at position 0.
    """

    def __init__(self, client, stream_id, criteria, max_steps, sampler=None, seed=None):
        self.client = client
        self.id = stream_id
        self.criteria = criteria
        self.input_size = client.input_size
        self.output_size = client.output_size
        self.max_steps = max_steps if max_steps is not None else client.trained_max_steps
        self.sampler = client.sampler if sampler is None else samplers.get(sampler)
        self.seed = seed
        options = {"stop": criteria, "max_steps": max_steps}
        if sampler is not None:
            options["sampler"] = sampler
        if seed is not None:
            options["seed"] = seed
        self._open = protocol.request(stream_id, "open", options)
        self._generation = None  # the connection it is open on
        self._closed = False

    @property
    def batch_size(self):
        return 1

    async def _call(self, text, revive=False):
        client = self.client
        if self._closed:
            raise ValueError(f"stream {self.id!r} is closed")
        if client._closed:
            raise _closed_error()
        if client._ws is None:
            await client.ensure_connected()
        if self._generation != client._generation:
            if self._generation is not None and not revive:
                raise StreamLostError(
                    f"stream {self.id!r} was lost with its connection (the server or "
                    "its replica went away); call set_state(saved) or reset() to go on")
            generation = client._generation
            opened = client.request(self._open)
            answer = client.request(text)  # the same message, in order
            try:
                item = await opened
            except BaseException:
                answer.close()  # never started: no "never awaited" warning
                raise
            if "error" in item:
                await answer
                raise RemoteError(item["error"])
            self._generation = generation
            return _checked(await answer)
        return _checked(await client.request(text))

    async def step(self, x):
        """One outer step; returns `Out[i]` as float32 `(L, output_size)`.

        Args:
            x: float array `(input_size,)`, or `(1, input_size)` (then a
                list of one array is returned, as `sg.Stream` does).

        Raises:
            ValueError: a wrong width or a non-finite value (checked here,
                as `sg.Stream` does); `RemoteError` for a server refusal.
            StreamLostError: the connection was lost since the last step.
        """
        array = checks.check_inputs(self, x, "x", ndim=(1, 2))
        if array.ndim == 2:
            if array.shape[0] != 1:
                raise ValueError(
                    "Received an invalid value for argument `x`, expected one row "
                    f"(a remote stream is one stream), got shape {array.shape}; "
                    "open one stream per row")
            return [await self.step(array[0])]
        item = await self._call(protocol.step_request(self.id, array))
        return wire.frames_array(item["out"], self.output_size)

    async def feed(self, inputs):
        """Yields `await step(x)` for each `x` of an iterable (async generator)."""
        for x in inputs:
            yield await self.step(x)

    async def reset(self):
        """Returns to the initial state (keeps the stop settings, the sampler
        and the seed: the draws start again)."""
        await self._call(protocol.request(self.id, "reset"), revive=True)

    async def get_state(self):
        """The state as `{"outer": [(1, size), ...], "inner": [...],
        "random": [(1, 4)]}` (numpy; `"random"` holds the seed and position)."""
        value = await self.get_state_value()
        packed, sizes = wire.load_state(value, self.client.fingerprint,
                                          self.client.state_sizes)
        return base.unpack_nest(packed, sizes)

    async def get_state_value(self):
        """The state as the server sends it: a STATE dict (see `streamgen.remote.wire`)."""
        return (await self._call(protocol.request(self.id, "get_state")))["state"]

    async def set_state(self, state):
        """Restores a state (a nest from any stream of this model, or a STATE).

        Also revives a stream lost with its connection.

        Raises:
            ValueError: a state of another model, a wrong shape or a
                non-finite value.
        """
        if isinstance(state, dict) and "format" in state:
            value = state
            wire.load_state(value, self.client.fingerprint, self.client.state_sizes, rows=1)
        else:
            value = wire.dump_state(state, self.client.fingerprint, self.client.state_sizes)
            if value["rows"] != 1:
                raise checks.invalid("state", "one row (a remote stream is one stream)",
                                      f"{value['rows']} rows")
        await self._call(protocol.request(self.id, "set_state", value), revive=True)

    async def close(self):
        """Closes the stream on the server."""
        if self._closed:
            return
        if self._generation == self.client._generation and self.client._ws is not None:
            try:
                await self.client.request(protocol.request(self.id, "close"))
            except ConnectionError:
                pass
        self._closed = True


def _checked(item):
    if "error" in item:
        raise RemoteError(item["error"])
    return item


# ---------------------------------------------------------------------- #
# The blocking flavour.
# ---------------------------------------------------------------------- #
class Client:
    """A blocking client: `sg.connect(url)`; share it between threads.

    Attributes:
        url, model, input_size, output_size: as `AsyncClient`.
    """

    def __init__(self, url, token=None, timeout=DEFAULT_TIMEOUT_S):
        timeout = _check_timeout(timeout)
        self._closed = False
        self._calls = set()  # concurrent futures of the calls in flight
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="streamgen-client", daemon=True)
        self._thread.start()
        try:
            self._async = self._run(AsyncClient.connect(url, token, timeout))
        except BaseException:
            self._stop_loop()
            raise
        self.timeout = timeout
        # Closed when collected or at exit if not before: quietly (issue 19).
        self._finalizer = weakref.finalize(self, _finish, self._loop, self._thread, self._async)
        for name in ("url", "model", "input_size", "output_size", "criteria", "frame_loss",
                     "sampler", "trained_max_steps", "fingerprint", "state_sizes"):
            setattr(self, name, getattr(self._async, name))

    def _run(self, coroutine):
        if self._closed:
            coroutine.close()
            raise _closed_error()
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        self._calls.add(future)
        try:
            return future.result()
        finally:
            self._calls.discard(future)

    @property
    def messages_sent(self):
        return self._async.messages_sent

    def open_stream(self, stop=None, max_steps=None, sampler=None, seed=None):
        """A new remote stream: a `sg.Stream` over a `RemoteRuntime`.

        Args:
            stop, max_steps, sampler: see `AsyncClient.open_stream`.
            seed: int in `[0, 2**32)`; `None` draws a fresh one (as
                `sg.Stream`; the stream's `seed` attribute holds it).

        Returns:
            A `sg.Stream` (one row: batch size 1), equal to a local
            `sg.Stream(model, stop=, max_steps=, sampler=, seed=)`.

        Example:

        >>> s = sg.connect(url).open_stream(sampler=sg.samplers.TopK(3), seed=7)  # doctest: +SKIP
        """
        if self._closed:
            raise _closed_error()
        return Stream(RemoteRuntime(self, stop=stop, max_steps=max_steps, sampler=sampler),
                      seed=seed)

    def close(self):
        """Closes the connection and the background thread.

        Calls waiting in other threads raise `ConnectionError`; so does
        any later call, at once. Closing twice does nothing.
        """
        if self._closed:
            return
        try:
            if self._loop.is_running():
                asyncio.run_coroutine_threadsafe(self._async.close(), self._loop).result(
                    self.timeout)
        except Exception:  # noqa: BLE001  (closed anyway)
            pass
        finally:
            self._closed = True
            self._stop_loop()
            for future in list(self._calls):
                if not future.done():
                    try:
                        future.set_exception(_closed_error())
                    except Exception:  # noqa: BLE001  (finished meanwhile)
                        pass
            finalizer = getattr(self, "_finalizer", None)
            if finalizer is not None:
                finalizer.detach()

    def _stop_loop(self):
        self._closed = True
        _finish(self._loop, self._thread)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _finish(loop, thread, client=None):
    """Stops a blocking client's loop and thread, quietly.

    With `client` (an `AsyncClient` not closed: the `Client` was collected,
    or the interpreter exits), its connection is closed first. Pending
    tasks are told not to complain when the interpreter collects them
    ("Task was destroyed but it is pending!").
    """
    mine = threading.current_thread() is thread
    if client is not None and not client._closed and loop.is_running() and not mine:
        try:
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(2.0)
        except Exception:  # noqa: BLE001  (closed anyway)
            pass
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
        if not mine:
            thread.join(timeout=5)
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:  # changed meanwhile
        tasks = ()
    for task in tasks:
        task._log_destroy_pending = False  # asyncio's own switch


class RemoteRuntime(Runtime):
    """A server's model as the runtime of `sg.Stream`s (blocking).

    `client.open_stream(stop=, max_steps=, sampler=, seed=)` is
    `sg.Stream(RemoteRuntime(client, stop=, max_steps=, sampler=), seed=)`:
    the same `Stream` as over a local model,
    with the same results. A remote row's state lives on the server, so the
    state this runtime hands to its `Stream` is a *handle* to one server
    stream (opened with its first request, closed when the handle is
    dropped), not a value: `get_state()` fetches the value (exact, as a
    nest), `set_state()` sends one. Hence only `Stream`'s calls
    (`advance`, `initial_state`, `pack`, `unpack`) are served; `run` and
    `step`, which take any rows as values, are not.

    Args:
        client: a `Client` (`sg.connect(url)`).
        stop: stop criteria (any built-in mix, objects or dicts); `None`:
            the server model's.
        max_steps: a lower cap, or `None`.
        sampler: a sampler (object, name or config dict), or `None`: the
            server model's.

    Example:

    >>> client = sg.connect("ws://127.0.0.1:8000")  # doctest: +SKIP
    >>> s = client.open_stream(stop=[sg.StopHead(0.7)], max_steps=5)  # doctest: +SKIP
    >>> out = s.step(np.zeros(3))     # doctest: +SKIP
    >>> saved = s.get_state()         # doctest: +SKIP
    >>> local = model.open_stream(); local.set_state(saved)  # doctest: +SKIP
    """

    def __init__(self, client, stop=None, max_steps=None, sampler=None):
        opened = client._async.open_stream(stop=stop, max_steps=max_steps,
                                           sampler=sampler)  # checks them
        self.client = client
        self.criteria = opened.criteria
        self.max_steps = opened.max_steps
        self._cap = max_steps if max_steps is None else opened.max_steps
        self._sampler = None if sampler is None else opened.sampler  # None: the server's
        self.sampler = opened.sampler
        self.frame_loss = client._async.frame_loss
        self.params = np.asarray(self.sampler.params(), np.float32)
        self.input_size = client.input_size
        self.output_size = client.output_size
        self.trained_max_steps = client.trained_max_steps
        self.state_sizes = client.state_sizes
        self.fingerprint = client.fingerprint
        self.decoder_state = client.model.get("decoder_state")

    def initial_state(self, n, seeds=None):
        """A handle to `n` fresh rows on the server (`n` must be 1), at
        `seeds` (an int, or a list of one; `None`: a fresh seed)."""
        if n != 1:
            raise checks.invalid("x", "one row (a remote stream is one stream; open one "
                                 "stream per row)", f"{n} rows")
        seed = None if seeds is None else int(base.row_seeds(seeds, 1)[0])
        return _RemoteRow(self.client, self.client._async.open_stream(
            stop=self.criteria, max_steps=self._cap, sampler=self._sampler, seed=seed))

    def advance(self, x, state, generate=None):
        if generate is not None and not np.all(generate):
            raise checks.invalid("generate", "True (a remote stream always runs model_b)", generate)
        frames = self.client._run(state.stream.step(x[0]))  # (L, output_size)
        padded = np.zeros((1, self.trained_max_steps, self.output_size), np.float32)
        padded[0, :len(frames)] = frames
        return padded, np.array([len(frames)], np.int32), state

    def unpack(self, state):
        return self.client._run(state.stream.get_state())

    def pack(self, state):
        row = self.initial_state(1)
        self.client._run(row.stream.set_state(state))
        return row

    def release(self, state):
        """Closes the row's server stream (`Stream.reset`); raises once the
        client is closed, like every call."""
        if self.client._closed:
            raise _closed_error()
        if state is not None:
            state.close()

    def run(self, x, state, generate=None, thresholds=None, caps=None, params=None,
            samples=None):
        raise TypeError("A remote runtime keeps its rows on the server: step them "
                        "through sg.Stream (client.open_stream()).")

    def with_options(self, stop=None, max_steps=None, sampler=None):
        return RemoteRuntime(self.client, self.criteria if stop is None else stop,
                             self._cap if max_steps is None else max_steps,
                             self._sampler if sampler is None else sampler)


class _RemoteRow:
    """The state handle of a remote row: one server stream, `(1, state_size)`.

    Closed on the server when dropped (a `Stream` resets or goes away).
    """

    def __init__(self, client, stream):
        self.stream = stream
        self.shape = (1, sum(client.state_sizes["outer"]) + sum(client.state_sizes["inner"])
                      + base.RANDOM_COLUMNS)
        self._finalizer = weakref.finalize(self, _close_row, client, stream)
        self._finalizer.atexit = False  # the client closes its connection itself

    def close(self):
        """Closes the server stream now (it is not opened before its first request)."""
        self._finalizer()


def _close_row(client, stream):
    """Closes a dropped row's server stream, without waiting (fire and forget)."""
    if not client._closed and client._loop.is_running():
        async def close():
            try:
                await stream.close()
            except Exception:  # noqa: BLE001  (the connection is gone: so is the row)
                pass

        asyncio.run_coroutine_threadsafe(close(), client._loop)


def connect(url, token=None, timeout=DEFAULT_TIMEOUT_S):
    """Connects to a `streamgen serve` server.

    Args:
        url: `ws://HOST:PORT` (or `.../v1/streams`; `wss://` for TLS).
        token: the server's bearer token, if it has one.
        timeout: seconds any call waits for the server (connecting
            included); then it raises `TimeoutError`.

    Returns:
        A `Client`: `client.open_stream(stop=None, max_steps=None,
        sampler=None, seed=None)` gives remote streams with `sg.Stream`'s
        API (the same outputs as a local stream of that seed). Share it between threads:
        their pending requests travel together in one message.

    Raises:
        ConnectionError: no server there (or the client was closed: every
            call then raises it at once); `StreamLostError` (a
            `ConnectionError`): the connection was lost; PermissionError:
            a token is needed or wrong; TimeoutError: no answer within
            `timeout`.

    Example:

    >>> client = sg.connect("ws://127.0.0.1:8000")  # doctest: +SKIP
    >>> s = client.open_stream(max_steps=5)  # doctest: +SKIP
    >>> s.step([0.5, 0.0, 0.1]).shape  # doctest: +SKIP
    (5, 2)
    """
    return Client(url, token, timeout)
