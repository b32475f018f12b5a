"""The service's bounds (issue 19): tokens, content types, bodies, queues.

Pure (asyncio only; no Ray): `app` uses these, and they are tested on
their own. Every bound is an option of `build_app` (and of
`streamgen serve`); the defaults are here.

- `authorized(header, token)`: the one comparison of a bearer token, on
  every route.
- `body_content_type_error(value)`: what `POST /v1/lines` reads.
- `read_body(chunks, max_bytes, timeout)`: a request body, bounded in
  size and in time, without quadratic copies.
- `MessageQueue`: the bounded queue of one connection's unanswered
  messages.
- `ConnectionReader`: a connection's reads, woken early when its worker
  ends, a drain starts or it stays idle past `--connection-timeout`.
- `Backoff`: client addresses refused for a while after one of their
  connections was closed for abuse (a reconnecting flooder gets one burst
  per period, not one per reconnection).
- `MemoryTrimmer`: gives the memory of refused requests back to the system.
"""

import asyncio
import ctypes
import ctypes.util
import hmac
import time

MAX_CONNECTIONS = 1000  # per replica; beyond: HTTP 503 / close 1013 at once
CONNECTION_HEADROOM = 100  # Serve's max_ongoing_requests above it: /healthz, refusals
MAX_QUEUED_MESSAGES = 16  # unanswered messages per connection; beyond: close 1013
MAX_STREAMS_PER_CONNECTION = 1000
MAX_REPLY_BYTES = 4 << 20  # state items beyond it are error items
MAX_BODY_BYTES = 16 << 20  # the body of POST /v1/lines; beyond: 413
BODY_TIMEOUT_S = 30.0  # the whole body of a request; beyond: 408
CONNECTION_TIMEOUT_S = 300.0  # a WebSocket without a message; beyond: close 1001
ABUSE_BACKOFF_S = 0.0  # off by default (behind a proxy every client shares one address)
MAX_ABUSE_BACKOFF_S = 60.0  # ... twice as long per repeat, up to this
MAX_BACKOFF_ADDRESSES = 10_000  # the most addresses remembered (the oldest go first)

DECODE_CONTENT_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines",
                        "text/plain", "application/octet-stream")


def authorized(header, token):
    """Whether an `Authorization` header value carries `token`.

    The scheme is `Bearer` (any case); spaces around the value and between
    scheme and token are ignored, as HTTP does for header values. Compared
    in constant time.

    Args:
        header: the header's value (`""` if absent).
        token: the server's token, or `None` (then anything goes).
    """
    if not token:
        return True
    parts = (header or "").split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return False
    return hmac.compare_digest(parts[1].encode("utf-8", "replace"), token.encode("utf-8"))


def body_content_type_error(value):
    """`None` if `POST /v1/lines` reads a body of this `Content-Type`, else why not.

    Read: none given, NDJSON / JSON lines, plain text and octet streams, in
    UTF-8 (or no charset).
    """
    if not value:
        return None
    kind, *params = [part.strip() for part in value.split(";")]
    charset = None
    for param in params:
        key, _, setting = param.partition("=")
        if key.strip().lower() == "charset":
            charset = setting.strip().strip('"').lower()
    if kind.lower() in DECODE_CONTENT_TYPES and charset in (None, "utf-8", "utf8", "us-ascii"):
        return None
    return (f"POST /v1/lines reads a body of NDJSON lines (Content-Type: "
            f"application/x-ndjson or text/plain, UTF-8), got Content-Type: {value!r}")


class BodyError(Exception):
    """A request body refused: `status` (413 too large, 408 too slow) and why."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


async def read_body(chunks, max_bytes=MAX_BODY_BYTES, timeout=BODY_TIMEOUT_S,
                    declared_length=None):
    """Reads an async iterator of byte chunks into one `bytes`, bounded.

    Args:
        chunks: e.g. Starlette's `request.stream()`.
        max_bytes: the most bytes; one more and `BodyError(413)` is raised
            at once (the rest is never read).
        timeout: seconds for the whole body; `BodyError(408)` after.
        declared_length: the request's `Content-Length` header (a string),
            or `None` (a chunked body): one over `max_bytes` is refused
            (413) before anything is read.

    Returns:
        The body.
    """
    if declared_length is not None and declared_length.strip().isdigit() and (
            int(declared_length) > max_bytes):
        raise BodyError(413, f"the body is over {max_bytes} bytes "
                             f"(Content-Length: {int(declared_length)})")
    parts, size = [], 0
    deadline = time.monotonic() + timeout
    iterator = chunks.__aiter__()
    while True:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(iterator.__anext__(), left)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise BodyError(408, f"the body was not received within {timeout:g} s") from None
        size += len(chunk)
        if size > max_bytes:
            raise BodyError(413, f"the body is over {max_bytes} bytes")
        if chunk:
            parts.append(chunk)
    return b"".join(parts)


class QueueFull(Exception):
    """A connection sent more unanswered messages than its queue holds."""


class MessageQueue:
    """A connection's received, unanswered messages (bounded).

    The connection's reader `put`s each message as it arrives; its worker
    `get`s them in order and answers. `put` past `maxsize` raises
    `QueueFull` (the connection is then closed with 1013): the server never
    buffers without bound. `clear()` drops the backlog of a closed
    connection.

    Args:
        maxsize: the most unanswered messages (>= 1).
    """

    def __init__(self, maxsize=MAX_QUEUED_MESSAGES):
        if int(maxsize) < 1:
            raise ValueError(f"Received an invalid value for argument `maxsize`, expected an "
                             f"integer >= 1, got {maxsize!r}")
        self.maxsize = int(maxsize)
        self._queue = asyncio.Queue()

    def __len__(self):
        return self._queue.qsize()

    def put(self, message):
        if self._queue.qsize() >= self.maxsize:
            raise QueueFull(
                f"more than {self.maxsize} unanswered messages on this connection "
                "(--max-queued-messages): read the replies")
        self._queue.put_nowait(message)

    async def get(self):
        return await self._queue.get()

    def clear(self):
        """Drops every queued message; returns how many."""
        dropped = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            dropped += 1
        return dropped


class ConnectionReader:
    """One WebSocket connection's reads, woken early for its bounds.

    `await reader.receive()` returns the next ASGI message, or `None` when
    the reader was woken: `wake()` was called (the connection's worker
    ended, a drain began: pass `wake` to `add_done_callback`), or no
    message came for `timeout` seconds while nothing was left to answer
    (`idle` is then true). The caller checks why, and reads on or closes.

    Each message costs one plain `await receive()`: no task, no
    `asyncio.wait` and no timer of its own (the idle check is one timer per
    connection, re-armed from the last message's time). A wake-up cancels
    only that await, so a message is never lost: ASGI receives hand a
    message over only once the await resumes.

    Args:
        receive: coroutine function -> the next ASGI message
            (`websocket.receive`).
        timeout: seconds without a message before `idle`, or `None`: never.
        busy: callable -> true while received messages are unanswered (the
            connection is then not idle, however long they take).

    Example:

    >>> async def demo():
    ...     inbox = asyncio.Queue()
    ...     reader = ConnectionReader(inbox.get, timeout=0.05)
    ...     inbox.put_nowait({"type": "websocket.receive", "text": "[]"})
    ...     first = await reader.receive()
    ...     second = await reader.receive()  # no message for 0.05 s: woken
    ...     reader.close()
    ...     return first["text"], second, reader.idle
    >>> asyncio.run(demo())
    ('[]', None, True)
    """

    def __init__(self, receive, timeout=None, busy=lambda: False):
        self._receive = receive
        self._task = None  # the task awaiting `receive()`, while it does: a wake-up cancels it
        self._loop = asyncio.get_running_loop()
        self._busy = busy
        self._woken = False
        self.idle = False
        self.timeout = timeout
        self._last = self._loop.time()
        self._timer = self._loop.call_later(timeout, self._check_idle) if timeout else None

    async def receive(self):
        """The next ASGI message, or `None` if woken first (see the class)."""
        if self.idle:
            return None
        self._task = asyncio.current_task()
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self._woken:
                raise  # cancelled by someone else: the connection is going away
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
            if uncancel is not None and uncancel() > 0:
                raise  # also cancelled by someone else meanwhile
            return None
        finally:
            self._task, self._woken = None, False
        self._last = self._loop.time()
        return message

    def wake(self, *_):
        """Makes a pending `receive()` return `None` (a no-op between reads)."""
        if self._task is not None and not self._woken:
            self._woken = True
            self._task.cancel()

    def close(self):
        """Stops the idle timer (call it when the connection ends)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_idle(self):
        now = self._loop.time()
        due = self._last + self.timeout
        if now < due:  # a message came since the timer was set
            self._timer = self._loop.call_at(due, self._check_idle)
        elif self._busy():  # still answering: not idle, look again later
            self._timer = self._loop.call_later(self.timeout, self._check_idle)
        else:
            self._timer = None
            self.idle = True
            self.wake()


class Backoff:
    """Client addresses refused for a while after an abusive connection.

    A connection closed for abuse (more unanswered messages than
    `--max-queued-messages`) makes its client's address wait before a new
    connection of it is accepted (`--abuse-backoff`): `seconds` the first
    time, twice as long for each repeat (up to `max_seconds`); an address
    without a new offence for `max_seconds` starts again from `seconds`.
    Behind Ray Serve's HTTP proxy the replica cannot stop the proxy from
    reading a socket (it reads and buffers every message at once, and the
    kernel buffers megabytes before TCP pushes back): closing is the only
    bound, and without this a client that reconnects at once makes the
    proxy read a new burst for every connection.

    Args:
        seconds: the first wait (0: never refused).
        max_seconds: the longest wait.
        max_addresses: the most addresses remembered (the oldest are
            forgotten first): a memory bound.
        now: the clock (`time.monotonic`), replaceable in tests.
    """

    def __init__(self, seconds=ABUSE_BACKOFF_S, max_seconds=MAX_ABUSE_BACKOFF_S,
                 max_addresses=MAX_BACKOFF_ADDRESSES, now=time.monotonic):
        if not float(seconds) >= 0:
            raise ValueError(f"Received an invalid value for argument `seconds`, expected a "
                             f"number >= 0, got {seconds!r}")
        self.seconds = float(seconds)
        self.max_seconds = max(float(max_seconds), self.seconds)
        self.max_addresses = int(max_addresses)
        self.now = now
        self._state = {}  # address -> (refused until, offences, last offence); oldest first

    def __len__(self):
        return len(self._state)

    def punish(self, address):
        """Records an offence of `address`; returns how long it is refused."""
        if not self.seconds or not address:
            return 0.0
        now = self.now()
        _, offences, last = self._state.pop(address, (0.0, 0, -float("inf")))
        offences = offences + 1 if now - last < self.max_seconds else 1
        wait = min(self.seconds * 2.0 ** min(offences - 1, 30), self.max_seconds)
        self._state[address] = (now + wait, offences, now)
        while len(self._state) > self.max_addresses:
            self._state.pop(next(iter(self._state)))
        return wait

    def left(self, address):
        """Seconds `address` must still wait (0.0: it may connect)."""
        state = self._state.get(address)
        if state is None:
            return 0.0
        now = self.now()
        if now - state[2] >= self.max_seconds:  # forgiven
            del self._state[address]
            return 0.0
        return max(0.0, state[0] - now)


def malloc_trim():
    """glibc's `malloc_trim(pad)` as a Python function, or `None` where the C
    library has none (musl, macOS, Windows)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class MemoryTrimmer:
    """Hands the memory of refused requests back to the system, soon after.

    A body refused as too large may have been sent whole by the proxy
    already (a fast client's 50 MB reach the replica before the 413); its
    chunks are freed when the request ends, and so are the messages queued
    by a connection closed for abuse. glibc's allocator keeps freed heap
    pages for reuse, so without a trim the replica's resident memory can
    stay tens of MB higher for good. `soon()` runs `malloc_trim(0)` at each
    of `delays` seconds after it was last called (in a thread: it takes
    milliseconds on a large heap): once per burst of refusals, however
    many. Nothing happens where `trim` is `None`.

    Args:
        trim: the function to call with `0` (`malloc_trim()` by default).
        delays: seconds after the last `soon()`, increasing.
    """

    def __init__(self, trim=None, delays=(0.5, 2.0, 5.0)):
        self.trim = malloc_trim() if trim is None else trim
        self.delays = tuple(delays)
        self.trims = 0  # calls of `trim` so far
        self._last = 0.0
        self._task = None

    def soon(self):
        """Schedules the trims (on the running event loop)."""
        self._last = time.monotonic()
        if self.trim is None or (self._task is not None and not self._task.done()):
            return  # the running task sees the new `_last`
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        done = 0  # delays passed since `_last`
        last = self._last
        while done < len(self.delays):
            await asyncio.sleep(max(0.0, last + self.delays[done] - time.monotonic()))
            if self._last != last:  # refused again meanwhile: start over from then
                last, done = self._last, 0
                continue
            await asyncio.to_thread(self.trim, 0)
            self.trims += 1
            done += 1
