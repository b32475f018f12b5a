"""A connection's streams: client-chosen ids -> rows of the replica's table.

Pure (no Ray): `Session.handle(message, submit)` applies one parsed client
message and returns its reply items; `submit` is the replica's batched step
(`TickLoop.submit`, or `Batcher.run` wrapped in a coroutine in tests).

Ordering: the requests of one stream apply in message order; those of
different streams are independent. So a message runs in *phases*: phase
`k` holds every stream's `k`-th request. In a phase the other actions apply
at once and all steps go to `submit` together — one batched step for a
message whose streams each have one request, whatever their number.
"""

import json
import time

from streamgen import checks
from streamgen import randomness
from streamgen.data.text import FLOAT32_OVERFLOW
from streamgen.remote import protocol
from streamgen.remote import wire
from streamgen.serve.batcher import LimitError, StepError


class Session:
    """The streams of one connection.

    Args:
        table: the replica's `StateTable`.
        now: the clock (`time.monotonic`), replaceable in tests.
        max_streams: the most open streams of this connection
            (`--max-streams-per-connection`), or `None` (only the table's).

    Attributes:
        rows: `id -> row` of the open streams.
        expired: ids dropped for idleness, reported once to the next request.
    """

    def __init__(self, table, now=time.monotonic, max_streams=None):
        self.table = table
        self.max_streams = max_streams
        self.runtime = table.runtime
        self.rows = {}
        self.expired = {}
        self.now = now

    # ------------------------------------------------------------------ #
    # A message.
    # ------------------------------------------------------------------ #
    async def handle(self, message, submit):
        """Applies a parsed `protocol.Message`; returns its reply items.

        Args:
            message: a `protocol.Message`.
            submit: coroutine function, `[(row, x), ...] -> [Out[i], ...]`.

        Returns:
            A list of `(kind, id, value)` items in request order: kind
            `"out"` (value `(L, O)` array), `"state"` (a STATE dict), `"ok"`
            or `"error"` (a message). Format them with `format_items`.
        """
        requests = message.requests
        items = [None] * len(requests)
        phases = []  # phase -> [(index, request)]
        depth = {}
        for index, request in enumerate(requests):
            k = depth.get(request.id, 0)
            depth[request.id] = k + 1
            if k == len(phases):
                phases.append([])
            phases[k].append((index, request))
        for phase in phases:
            steps, where = [], []
            for index, request in phase:
                try:
                    result = self._apply(request)
                except (ValueError, TypeError) as error:
                    items[index] = ("error", request.id, _message(error, self.runtime))
                    continue
                if result[0] == "step":  # ("step", row, x): batched below
                    steps.append(result[1:])
                    where.append((index, request.id))
                else:
                    items[index] = result
            if steps:
                try:
                    outs = await submit(steps)
                except Exception as error:  # noqa: BLE001  (a server fault: said per item)
                    outs = [error] * len(steps)
                for (index, stream_id), out in zip(where, outs):
                    if isinstance(out, StepError):  # said to the client as it is
                        items[index] = ("error", stream_id, str(out))
                    elif isinstance(out, Exception):
                        items[index] = ("error", stream_id,
                                        f"internal error of the server: {type(out).__name__}")
                    else:
                        items[index] = ("out", stream_id, out)
        return items

    def _apply(self, request):
        """Applies one request; a step returns `("step", row, x)` for the batch."""
        action, stream_id = request.action, request.id
        if action == "step":  # the common request first
            x = _plain_vector(request.value, self.runtime.input_size)
            if x is None:  # not the common case: the full check, with its message
                x = checks.check_inputs(self.runtime, request.value, "x", ndim=1)
            row = self.row(stream_id)
            self.touch(row)
            return ("step", row, x)
        if action == "invalid":
            raise ValueError(request.value)
        if action == "close":
            self.expired.pop(stream_id, None)
            row = self.rows.pop(stream_id, None)
            if row is None:
                raise ValueError(f"no open stream with id {stream_id!r}")
            self.table.release(row)
            return ("ok", stream_id, None)
        if action == "open":
            value = request.value
            thresholds, cap = self.runtime.options(value.get("stop"), value.get("max_steps"))
            params = sampler_params(self.runtime, value.get("sampler"))
            seed = open_seed(value.get("seed"))
            self.expired.pop(stream_id, None)
            row = self.rows.get(stream_id)
            if row is None:
                self.rows[stream_id] = self._allocate(stream_id, thresholds, cap, params, seed)
            else:  # re-open: fresh state, new settings
                self.table.configure(row, thresholds, cap, params, seed)
                self.table.reset(row)
                self.touch(row)
            return ("ok", stream_id, None)
        if action == "reset":
            row = self.row(stream_id)
            self.table.reset(row)  # its seed, at position 0
            self.touch(row)
            return ("ok", stream_id, None)
        if action == "get_state":
            row = self.row(stream_id)
            self.touch(row)
            state = wire.dump_state(self.table.states[row:row + 1],
                                      self.runtime.fingerprint, self.runtime.state_sizes)
            return ("state", stream_id, state)
        if action == "set_state":
            packed, _ = wire.load_state(request.value, self.runtime.fingerprint,
                                          self.runtime.state_sizes, rows=1)
            self.expired.pop(stream_id, None)  # restores a stream dropped for idleness
            row = self.row(stream_id)
            self.table.states[row] = packed[0]
            self.touch(row)
            return ("ok", stream_id, None)
        raise AssertionError(action)

    def row(self, stream_id):
        """The stream's row; a stream is opened with the defaults on first use.

        Raises:
            ValueError: the stream was dropped for idleness (said once).
            LimitError: no row is free.
        """
        row = self.rows.get(stream_id)
        if row is not None:
            return row
        if stream_id in self.expired:
            seconds = self.expired.pop(stream_id)
            raise ValueError(
                f"stream {stream_id!r} was closed after {seconds:g} s without a request "
                "(--idle-timeout); its next request opens it afresh, or set_state "
                "restores a saved state")
        thresholds, cap = self.runtime.options()
        row = self.rows[stream_id] = self._allocate(stream_id, thresholds, cap)
        return row

    def _allocate(self, stream_id, thresholds, cap, params=None, seed=None):
        """A new row for a stream of this connection, within its quota
        (`params` `None`: the runtime's sampler; `seed` `None`: a fresh one)."""
        if self.max_streams is not None and len(self.rows) >= self.max_streams:
            raise LimitError(
                f"this connection holds its maximum of {self.max_streams} streams: at most "
                f"{self.max_streams} streams per connection (--max-streams-per-connection); "
                "close some streams first")
        return self.table.allocate((self, stream_id), thresholds, cap, params=params, seed=seed)

    def touch(self, row):
        """Marks the row as used now (for --idle-timeout)."""
        self.table.last_used[row] = self.now()

    # ------------------------------------------------------------------ #
    # Life cycle.
    # ------------------------------------------------------------------ #
    def drop(self, stream_id, seconds):
        """Drops an idle stream (its row is already released)."""
        if self.rows.pop(stream_id, None) is not None:
            self.expired[stream_id] = seconds
            if len(self.expired) > 10_000:  # bounded memory for a client that never returns
                self.expired.pop(next(iter(self.expired)))

    def close(self):
        """Releases every row of this connection."""
        for row in self.rows.values():
            self.table.release(row)
        self.rows.clear()


def sampler_params(runtime, sampler):
    """The `"sampler"` of an `open` request -> its row of `params` `(4,)`.

    Args:
        runtime: the replica's runtime.
        sampler: `None` (the runtime's sampler), a name (`"top-k"`) or a
            config (`{"class_name": "TopK", "config": {"k": 3}}`).

    Raises:
        ValueError: naming `sampler` (and the frame kind, for a sampler
            that does not apply to the model's frames).
    """
    if sampler is not None and not isinstance(sampler, (str, dict)):
        raise checks.invalid("sampler", "a name such as \"top-k\" or an object "
                             "{\"class_name\": ..., \"config\": {...}}", sampler)
    try:
        return runtime.sampler_params(sampler)
    except (TypeError, ValueError) as error:
        text = str(error)
        if "`sampler`" in text:
            raise ValueError(text) from None
        shown = json.dumps(sampler, separators=(",", ":"))[:200]
        raise ValueError(f"Received an invalid value for argument `sampler` ({shown}): "
                         f"{text}") from None


def open_seed(seed):
    """The `"seed"` of an `open` request -> an int (`None`: a fresh seed,
    `randomness.new_seed()`).

    Raises:
        ValueError: naming `seed`, for anything but an integer in `[0, 2**32)`.
    """
    if seed is None:
        return randomness.new_seed()
    return randomness.check_seed("seed", seed)


def _plain_vector(value, size):
    """`value` itself if it is a list of `size` finite numbers that fit in
    float32 (what a JSON message holds), else `None`.

    The server's fast path: `checks.check_inputs` costs several times more
    per step, and `Batcher.gather` converts all the steps of a tick at once.
    """
    if type(value) is not list or len(value) != size:
        return None
    for v in value:
        if type(v) is not float and type(v) is not int:  # bool is neither
            return None
        if not -FLOAT32_OVERFLOW < v < FLOAT32_OVERFLOW:  # also False for NaN
            return None
    return value


def expire_idle(table, timeout, now=None):
    """Drops every stream idle for more than `timeout` seconds; returns how many."""
    dropped = table.expired(timeout, now)
    for row, (session, stream_id) in dropped:
        table.release(row)
        session.drop(stream_id, timeout)
    return len(dropped)


def format_items(items, max_bytes=None):
    """Reply items from `Session.handle` -> the reply message text.

    Args:
        items: `[(kind, id, value), ...]`.
        max_bytes: a bound on the reply (about): a `state` item that would
            pass it is an error item instead (outputs are always sent:
            their steps ran). `None`: no bound.
    """
    parts = []
    size, over = 0, False
    for kind, stream_id, value in items:
        if kind == "out":
            parts.append(protocol.out_item(stream_id, value))
        elif kind == "state":
            part = protocol.state_item(stream_id, value)
            if max_bytes is not None and size + len(part) > max_bytes:
                part = protocol.error_item(stream_id, "reply over the limit" if over else (
                    f"the reply would be over {max_bytes} bytes (reply over the limit); "
                    "ask for fewer states per message"))
                over = True
            parts.append(part)
        elif kind == "ok":
            parts.append(protocol.ok_item(stream_id))
        else:
            parts.append(protocol.error_item(stream_id, value))
        size += len(parts[-1]) + 1
    return protocol.reply(parts)


def format_bare(items):
    """The reply to a bare message (one step of the default stream)."""
    (kind, _, value), = items
    if kind == "out":
        return protocol.bare_reply(value)
    return protocol.bare_reply(error=value)


def _message(error, runtime):
    """An error's text for a client; the library's hint is dropped."""
    text = str(error)
    hint = getattr(runtime, "kind_hint", "")
    if hint and text.endswith(hint):
        text = text[: -len(hint)].rstrip() + (
            " This server runs only these criteria of non-built-in classes.")
    return text
