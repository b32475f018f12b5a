"""Issue 19, without Ray: the protocol, session, batcher and client under
abuse (huge integers, idle drops, overflowing states, quotas, big replies,
frozen or closed servers). The Ray side is in `test_serve_abuse.py`."""

import asyncio
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import streamgen as sg
from helpers import assert_outputs_equal, make_model
from streamgen.remote import wire
from streamgen.runtimes import base
from streamgen.remote import protocol
from streamgen.serve import limits
from streamgen.serve.batcher import Batcher, StateTable
from streamgen.serve.session import Session, expire_idle, format_items

websockets = pytest.importorskip("websockets")


@pytest.fixture(scope="module")
def model():
    return make_model(seed=3, stop_scale=8.0)


@pytest.fixture(scope="module")
def runtime(model):
    return sg.open_runtime(model)


def handle(session, text, batcher):
    async def submit(steps):
        return batcher.run(steps)
    return asyncio.run(session.handle(protocol.parse_message(text), submit))


# ---------------------------------------------------------------------- #
# 7: integers of any length.
# ---------------------------------------------------------------------- #
def test_integers_of_any_length_are_error_items(runtime):
    huge = "1" * 5000
    table = StateTable(runtime)
    session = Session(table)
    batcher = Batcher(table)
    items = handle(session, f'[{{"id": "a", "x": [{huge}, 0, 0]}}, {{"id": "b", "x": [1, 0, 0]}}]',
                   batcher)
    assert items[0][0] == "error" and "non-finite" in items[0][2]
    assert items[1][0] == "out"
    bare = protocol.parse_message(f"[-{huge}, 0, 0]")
    assert bare.bare and bare.requests[0].value[0] == -float("inf")
    assert protocol.parse_message(f'[{{"id": "a", "open": {{"max_steps": {huge}}}}}]')
    assert protocol.parse_reply(f"[{huge}]") == [float("inf")]


# ---------------------------------------------------------------------- #
# 10: set_state after an idle drop restores.
# ---------------------------------------------------------------------- #
def test_set_state_after_an_idle_drop_restores(model, runtime):
    clock = [100.0]
    table = StateTable(runtime)
    batcher = Batcher(table)
    session = Session(table, now=lambda: clock[0])
    xs = np.random.default_rng(0).uniform(-1, 1, size=(2, 3)).astype(np.float32)
    handle(session, protocol.reply([protocol.step_request("a", xs[0])]), batcher)
    (_, _, saved), = handle(session, protocol.reply([protocol.request("a", "get_state")]), batcher)
    assert expire_idle(table, 10.0, now=111.0) == 1
    items = handle(session, protocol.reply([protocol.request("a", "set_state", saved),
                                            protocol.step_request("a", xs[1])]), batcher)
    assert items[0] == ("ok", "a", None)
    local = sg.Stream(model)
    local.step(xs[0])
    assert_outputs_equal([items[1][2]], [local.step(xs[1])])


# ---------------------------------------------------------------------- #
# 11: a finite state that overflows.
# ---------------------------------------------------------------------- #
@pytest.mark.filterwarnings("error::RuntimeWarning")  # the replica's log stays quiet
def test_an_overflowing_state_keeps_the_stream_usable():
    import importlib.resources

    import keras

    path = str(importlib.resources.files("streamgen").joinpath("default_model.keras"))
    model = keras.models.load_model(path, compile=False)
    runtime = sg.open_runtime(model)  # its inner state overflows from 3e38 (the tiny ones' not)
    table = StateTable(runtime)
    batcher = Batcher(table)
    session = Session(table)
    huge = np.full((1, runtime.state_size), 3e38, np.float32)
    huge[:, -base.RANDOM_COLUMNS:] = 0.0  # seed 0 at position 0 (whole 16-bit halves)
    state = wire.dump_state(huge, runtime.fingerprint, runtime.state_sizes)
    x = np.full(runtime.input_size, 0.3, np.float32)
    items = handle(session, protocol.reply([protocol.request("a", "set_state", state),
                                            protocol.step_request("a", x)]), batcher)
    assert items[0][0] == "ok" or "overflow" in items[0][2]
    if items[0][0] == "ok":
        assert items[1][0] == "error" and "overflow" in items[1][2]
    (kind, _, value), = handle(session, protocol.reply([protocol.request("a", "get_state")]),
                               batcher)
    assert kind == "state"
    packed, _ = wire.load_state(value, runtime.fingerprint, runtime.state_sizes)
    assert np.isfinite(packed).all()
    items = handle(session, protocol.reply([protocol.request("a", "reset"),
                                            protocol.step_request("a", x)]), batcher)
    assert_outputs_equal([items[1][2]], [sg.Stream(model).step(x)])


# ---------------------------------------------------------------------- #
# 8, 9: quotas per connection and per message, reply size.
# ---------------------------------------------------------------------- #
def test_streams_per_connection_quota(runtime):
    table = StateTable(runtime, max_streams=100)
    batcher = Batcher(table)
    one, two = Session(table, max_streams=2), Session(table, max_streams=2)
    x = [0.1, 0.2, 0.3]
    items = handle(one, json.dumps([{"id": i, "x": x} for i in "abc"]
                                   + [{"id": "d", "open": {}}]), batcher)
    assert [kind for kind, *_ in items] == ["out", "out", "error", "error"]
    assert "at most 2 streams per connection (--max-streams-per-connection)" in items[2][2]
    assert [k for k, *_ in handle(two, json.dumps([{"id": "a", "x": x}]), batcher)] == ["out"]
    handle(one, json.dumps([{"id": "a", "close": True}]), batcher)
    assert [k for k, *_ in handle(one, json.dumps([{"id": "c", "x": x}]), batcher)] == ["out"]
    assert len(table) == 3


def test_requests_per_message_and_reply_size(runtime):
    with pytest.raises(protocol.ProtocolError, match="at most 10 requests"):
        protocol.parse_message(json.dumps([{"id": "a", "get_state": True}] * 11),
                               max_requests=10)
    assert len(protocol.parse_message(json.dumps([{"id": "a", "get_state": True}] * 10),
                                      max_requests=10).requests) == 10
    assert protocol.MAX_REQUESTS_PER_MESSAGE >= 1000
    table = StateTable(runtime)
    session = Session(table)
    text = json.dumps([{"id": "a", "get_state": True}] * 400)
    items = handle(session, text, Batcher(table))
    big = format_items(items)
    small = format_items(items, max_bytes=len(text))
    assert len(big) > 5 * len(text)  # what the limit prevents
    parsed = json.loads(small)
    assert len(parsed) == 400 and "state" in parsed[0]
    refused = [item["error"] for item in parsed if "error" in item]
    assert "fewer states" in refused[0] and set(refused[1:]) == {"reply over the limit"}
    assert len(small) <= len(text) + 200 + 45 * len(refused)  # a short item each


# ---------------------------------------------------------------------- #
# 12: the token, the content type.
# ---------------------------------------------------------------------- #
def test_token_compared_the_same_way_everywhere():
    for given in ("Bearer s3cret", "Bearer s3cret ", " Bearer  s3cret", "bearer s3cret"):
        assert limits.authorized(given, "s3cret"), given
    for given in ("", "Bearer", "Bearer wrong", "Bearer s3cret x", "Basic s3cret", "s3cret",
                  "Bearer s3crett", "Bearer \u00e9"):
        assert not limits.authorized(given, "s3cret"), given
    assert limits.authorized("", None) and limits.authorized("anything", None)


def test_decode_content_types():
    for ok in (None, "", "application/x-ndjson", "text/plain; charset=utf-8",
               "application/jsonl", "application/octet-stream", "Application/X-NDJSON"):
        assert limits.body_content_type_error(ok) is None, ok
    for bad in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                "application/xml", "image/png", "text/plain; charset=latin-1"):
        assert "Content-Type" in limits.body_content_type_error(bad), bad



def test_declared_body_length_over_the_limit_is_refused_unread():
    read = []

    async def chunks():
        read.append(1)
        yield b"0.5 0 0.1\n"

    with pytest.raises(limits.BodyError) as info:
        asyncio.run(limits.read_body(chunks(), max_bytes=100, declared_length="101"))
    assert info.value.status == 413 and "over 100 bytes" in str(info.value) and read == []
    assert asyncio.run(limits.read_body(chunks(), 100, declared_length="10")) == b"0.5 0 0.1\n"
    assert asyncio.run(limits.read_body(chunks(), 100)) == b"0.5 0 0.1\n"  # chunked


def test_abuse_backoff_doubles_per_repeat_and_is_forgiven():
    clock = [0.0]
    backoff = limits.Backoff(1.0, max_seconds=8.0, max_addresses=2, now=lambda: clock[0])
    assert backoff.left("10.0.0.1") == 0.0
    assert [backoff.punish("10.0.0.1") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff.left("10.0.0.1") == 8.0 and backoff.left("10.0.0.2") == 0.0
    clock[0] = 7.5
    assert backoff.left("10.0.0.1") == 0.5
    clock[0] = 16.0  # no offence for max_seconds: forgiven, from 1 s again
    assert backoff.left("10.0.0.1") == 0.0 and backoff.punish("10.0.0.1") == 1.0
    backoff.punish("10.0.0.2"), backoff.punish("10.0.0.3")  # the oldest is forgotten
    assert len(backoff) == 2 and backoff.left("10.0.0.1") == 0.0
    assert limits.Backoff(0).punish("10.0.0.1") == 0.0  # off


def test_memory_trimmer_trims_after_each_burst_of_refusals():
    calls = []
    trimmer = limits.MemoryTrimmer(trim=lambda pad: calls.append((pad, time.monotonic())),
                                   delays=(0.05, 0.15))

    async def main():
        start = time.monotonic()
        for _ in range(5):  # one burst: one series of trims, from its last refusal
            await asyncio.sleep(0.02)
            trimmer.soon()
            last = time.monotonic()
        await asyncio.sleep(0.3)
        assert [pad for pad, _ in calls] == [0, 0]
        assert calls[0][1] >= last + 0.045 and calls[1][1] >= last + 0.145
        assert last > start + 0.09
        trimmer.soon()  # a later burst trims again
        await asyncio.sleep(0.3)
    asyncio.run(main())
    assert trimmer.trims == len(calls) == 4
    if sys.platform.startswith("linux"):  # glibc: the real function, which returns 0 or 1
        assert limits.malloc_trim()(0) in (0, 1)

def test_connection_reader_wakes_without_losing_a_message():
    async def main():
        inbox = asyncio.Queue()
        reader = limits.ConnectionReader(inbox.get, timeout=None)
        got = []

        async def read():
            while len(got) < 3:
                got.append(await reader.receive())

        task = asyncio.ensure_future(read())
        inbox.put_nowait("m1")
        await asyncio.sleep(0.01)
        reader.wake()  # waiting on the next message: woken with None
        reader.wake()  # twice before it resumes: still one wake-up
        await asyncio.sleep(0.01)
        inbox.put_nowait("m2")  # the woken read took nothing: it comes next
        await asyncio.wait_for(task, 1)
        assert got == ["m1", None, "m2"] and not reader.idle
        reader.wake()  # between reads: a no-op
        inbox.put_nowait("m3")
        assert await reader.receive() == "m3"

        async def read_forever():  # someone else's cancel still cancels
            reader_b = limits.ConnectionReader(asyncio.Queue().get)
            await reader_b.receive()

        task = asyncio.ensure_future(read_forever())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())


def test_connection_reader_is_idle_only_with_nothing_to_answer():
    async def main():
        inbox, busy = asyncio.Queue(), [True]
        reader = limits.ConnectionReader(inbox.get, timeout=0.1, busy=lambda: busy[0])
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(3):  # each message starts the timeout again
            await asyncio.sleep(0.06)
            inbox.put_nowait("m")
            assert await reader.receive() == "m"
        busy[0] = False  # answering until now
        assert await asyncio.wait_for(reader.receive(), 1) is None and reader.idle
        assert loop.time() - start >= 0.18 + 0.1 - 0.01
        assert await reader.receive() is None  # idle stays idle
        reader.close()

        busy = [True]  # still answering at the timeout: not idle until it is done
        reader = limits.ConnectionReader(inbox.get, timeout=0.05, busy=lambda: busy[0])
        loop.call_later(0.12, lambda: busy.__setitem__(0, False))
        start = loop.time()
        assert await asyncio.wait_for(reader.receive(), 1) is None and reader.idle
        assert loop.time() - start >= 0.12
        reader.close()
    asyncio.run(main())


# ---------------------------------------------------------------------- #
# 5, 6, 12: the client never hangs.
# ---------------------------------------------------------------------- #
class FrozenServer:
    """`/v1/model` and a WebSocket that reads messages and never answers
    (a frozen replica), or answers when `answer` is set."""

    INFO = {"input_size": 3, "output_size": 2, "stop": [], "fingerprint": "sha256:0",
            "state_sizes": {"outer": [4], "inner": []}, "trained_max_steps": 5}

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.connections = set()
        self.answer = False
        started = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(30)
        self.url = f"ws://127.0.0.1:{self.port}"

    def _main(self, started):
        from websockets.asyncio.server import serve

        async def process_request(connection, request):
            if request.path == "/v1/model":
                return connection.respond(200, json.dumps(self.INFO))
            return None

        async def handler(websocket):
            self.connections.add(websocket)
            async for text in websocket:
                if self.answer:
                    n = len(json.loads(text))
                    await websocket.send(json.dumps([{"ok": True}] * n))

        async def run():
            async with serve(handler, "127.0.0.1", 0, process_request=process_request) as server:
                self.port = server.sockets[0].getsockname()[1]
                self.stop = asyncio.Event()
                started.set()
                await self.stop.wait()

        self.loop.run_until_complete(run())

    def drop(self):
        async def close():
            for ws in list(self.connections):
                await ws.close(1011)
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)

    def shutdown(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


@pytest.fixture
def frozen():
    server = FrozenServer()
    yield server
    server.shutdown()


def test_client_times_out_on_a_frozen_server(frozen):
    with sg.connect(frozen.url, timeout=0.5) as client:
        stream = client.open_stream()
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="0.5 s"):
            stream.step([0.1, 0.2, 0.3])
        assert 0.4 < time.monotonic() - start < 3
    with pytest.raises(ValueError, match="timeout"):
        sg.connect(frozen.url, timeout=0)


def test_close_wakes_every_waiter_and_later_calls_raise_at_once(frozen):
    client = sg.connect(frozen.url, timeout=30)
    streams = [client.open_stream() for _ in range(4)]
    errors = [None] * 4

    def work(i):
        try:
            streams[i].step([0.1, 0.2, 0.3])
        except BaseException as error:  # noqa: BLE001
            errors[i] = error

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    start = time.monotonic()
    client.close()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)
    assert all(type(e) is ConnectionError and "closed" in str(e) for e in errors), errors
    for call in (lambda: streams[0].step([0.1, 0.2, 0.3]), lambda: client.open_stream(),
                 streams[1].reset, streams[2].get_state):
        with pytest.raises(ConnectionError, match="closed"):
            call()
    assert time.monotonic() - start < 5
    client.close()  # twice: nothing


def test_a_lost_connection_is_one_exception_class(frozen):
    from streamgen.remote.client import StreamLostError

    frozen.answer = True
    with sg.connect(frozen.url, timeout=10) as client:
        stream = client.open_stream()
        zeros = {part: [np.zeros((1, n), np.float32) for n in sizes]
                 for part, sizes in client.state_sizes.items()}
        stream.set_state(zeros)  # a request answered
        frozen.answer = False
        errors = []

        def work():
            try:
                stream.set_state(zeros)  # a request in flight when the connection is lost
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

        thread = threading.Thread(target=work)
        thread.start()
        time.sleep(0.3)
        frozen.drop()
        thread.join(10)
        with pytest.raises(StreamLostError):
            stream.step([0.1, 0.2, 0.3])
        assert len(errors) == 1 and type(errors[0]) is StreamLostError, errors


@pytest.mark.slow
def test_no_stderr_at_exit_closed_or_not(frozen):
    frozen.answer = True
    runs = {  # a client left open at exit, one collected, one closed
        "global": "c = sg.connect(URL)\nc.open_stream().reset()\n",
        "collected": "def f():\n    sg.connect(URL).open_stream().reset()\nf()\n"
                     "import gc; gc.collect()\n",
        "closed": "with sg.connect(URL) as c:\n    c.open_stream().reset()\n",
    }
    for name, body in runs.items():
        code = f"import streamgen as sg\nURL = {frozen.url!r}\n{body}print('done')\n"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=120)
        assert result.stdout == "done\n" and result.stderr == "", (name, result.stderr)


# ---------------------------------------------------------------------- #
# 2: the work of a connection that went away is dropped.
# ---------------------------------------------------------------------- #
def test_steps_of_a_cancelled_caller_never_run(runtime):
    from streamgen.serve.batcher import TickLoop

    table = StateTable(runtime)
    gone, kept = (table.allocate(("t", i), *runtime.options()) for i in range(2))
    x = np.array([0.5, 0.0, 0.1], np.float32)

    async def main():
        ticks = TickLoop(Batcher(table))
        ticks.start()
        backlog = [asyncio.ensure_future(ticks.submit([(gone, x)])) for _ in range(50)]
        await asyncio.sleep(0)  # all submitted, none stepped yet
        for task in backlog:
            task.cancel()  # the connection closed: its worker is cancelled
        out, = await ticks.submit([(kept, x)])
        await ticks.stop()
        return ticks.rows_stepped, out

    stepped, out = asyncio.run(main())
    assert stepped == 1 and len(out) >= 0
    fresh = runtime.initial_state(1, seeds=int(table.seeds[gone]))[0]  # zeros at its seed
    assert np.array_equal(table.states[gone], fresh)
    assert not np.array_equal(table.states[kept], runtime.initial_state(
        1, seeds=int(table.seeds[kept]))[0])
