"""`streamgen.remote.client` against an in-process server (no Ray): the same
session and batcher as `streamgen serve`, behind a bare `websockets` server."""

import asyncio
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import streamgen as sg
from helpers import assert_outputs_equal, make_model
from streamgen.remote.client import AsyncClient, StreamLostError, _urls
from streamgen.remote import protocol
from streamgen.serve import playground
from streamgen.serve.batcher import Batcher, StateTable, TickLoop
from streamgen.serve.session import Session, format_bare, format_items


class MiniServer:
    """`/`, `/v1/model` and `/v1/streams` on a thread, over `Session`/`TickLoop`."""

    def __init__(self, model):
        self.runtime = sg.open_runtime(model)
        self.table = StateTable(self.runtime)
        self.messages = 0
        self.connections = set()
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._main, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(30)
        self.url = f"ws://127.0.0.1:{self.port}"

    def _main(self, started):
        from websockets.asyncio.server import serve

        async def process_request(connection, request):
            if request.path == "/v1/model":
                r = self.runtime
                info = {"model": "tiny", **r.describe(), "trained_max_steps": r.trained_max_steps}
                response = connection.respond(200, json.dumps(info))
                response.headers["Content-Type"] = "application/json"
                return response
            if request.path == "/":  # the playground page, as `streamgen serve` sends it
                response = connection.respond(200, playground.page())
                response.headers.update({"Content-Type": "text/html; charset=utf-8",
                                         **playground.HEADERS})
                return response
            return None

        async def handler(websocket):
            self.connections.add(websocket)
            session = Session(self.table)
            try:
                async for text in websocket:
                    self.messages += 1
                    message = protocol.parse_message(text)
                    items = await session.handle(message, self.ticks.submit)
                    await websocket.send(format_bare(items) if message.bare else format_items(items))
            finally:
                session.close()

        def subprotocol(connection, offered):  # the page's; the client offers none
            return "streamgen.v1" if "streamgen.v1" in offered else None

        async def run():
            self.ticks = TickLoop(Batcher(self.table))
            async with serve(handler, "127.0.0.1", 0, process_request=process_request,
                             select_subprotocol=subprotocol) as server:
                self.port = server.sockets[0].getsockname()[1]
                self.stop = asyncio.Event()
                started.set()
                await self.stop.wait()
            await self.ticks.stop()

        self.loop.run_until_complete(run())
        self.loop.close()

    def shutdown(self):
        """Closes the connections, stops the server and its thread."""
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        assert not self.thread.is_alive()

    def drop_connections(self):
        async def close():
            for ws in list(self.connections):
                await ws.close(1011)
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)


@pytest.fixture(scope="module")
def model():
    return make_model(seed=3, stop_scale=8.0)


def serving(model):
    """A `MiniServer` of `model` for a fixture: `yield from serving(model)`."""
    server = MiniServer(model)
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def server(model):
    yield from serving(model)


@pytest.mark.slow
def test_importing_and_using_the_client_never_imports_tensorflow():
    code = ("import sys, streamgen as sg\n"
            "assert callable(sg.connect)\n"
            "import streamgen.remote.client, streamgen.remote.wire, streamgen.remote.protocol\n"
            "try:\n    sg.connect('ws://127.0.0.1:9')\nexcept ConnectionError as e:\n"
            "    print('refused')\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.split("\n")[-2] == "False False", result.stderr
    assert "refused" in result.stdout


def test_urls():
    assert _urls("ws://h:1") == ("ws://h:1/v1/streams", "http://h:1")
    assert _urls("wss://h:1/v1/streams/") == ("wss://h:1/v1/streams", "https://h:1")
    assert _urls("http://h:1/v1") == ("ws://h:1/v1/streams", "http://h:1")
    assert _urls("ws://h:1/lite") == ("ws://h:1/lite/v1/streams", "http://h:1/lite")
    with pytest.raises(ValueError, match="argument `url`"):
        _urls("h:1")


def test_threads_share_one_message_and_match_local_streams(server, model):
    xs = np.random.default_rng(0).uniform(-1, 1, size=(8, 5, 3)).astype(np.float32)
    thresholds = [0.2, 0.5, 0.8, 0.5, 0.3, 0.6, 0.5, 0.9]
    caps = [None, 3, 9, 1, None, 5, 2, None]
    with sg.connect(server.url) as client:
        streams = [client.open_stream(
            stop=[{"class_name": "StopHead", "config": {"threshold": t}}], max_steps=c)
            for t, c in zip(thresholds, caps)]
        got = [None] * 8
        barrier = threading.Barrier(8)

        def work(i):
            barrier.wait()
            got[i] = [streams[i].step(x) for x in xs[i]]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.messages_sent < 8 * 5  # requests of several threads travelled together
    for i in range(8):
        local = sg.Stream(model, stop=sg.StopHead(thresholds[i]), max_steps=caps[i])
        assert_outputs_equal(got[i], [local.step(x) for x in xs[i]])


def test_state_moves_between_stream_and_remote(server, model, tmp_path):
    xs = np.random.default_rng(1).uniform(-1, 1, size=(4, 3)).astype(np.float32)
    local = sg.Stream(model)
    local.step(xs[0])
    with sg.connect(server.url) as client:
        remote = client.open_stream()
        remote.set_state(local.get_state())
        assert_outputs_equal([remote.step(xs[1])], [local.step(xs[1])])
        state = remote.get_state()
        assert [a.shape for a in state["outer"]] == [a.shape for a in local.get_state()["outer"]]
        fresh = sg.Stream(model)
        fresh.set_state(state)
        assert_outputs_equal([fresh.step(xs[2])], [local.step(xs[2])])
        with pytest.raises(ValueError, match="non-finite"):
            bad = remote.get_state()
            bad["outer"][0][0, 0] = np.nan
            remote.set_state(bad)
        with pytest.raises(ValueError, match="batch of 2 rows, but this stream carries"):
            remote.step(xs[:2])  # the rule of every Stream
        assert len(remote.step(xs[:1])) == 1
        with pytest.raises(ValueError, match="one row"):  # a remote stream is one row
            client.open_stream().step(xs[:2])


def test_lost_connection_then_set_state_resumes(server, model):
    xs = np.random.default_rng(2).uniform(-1, 1, size=(3, 3)).astype(np.float32)
    local = sg.Stream(model, max_steps=4)
    with sg.connect(server.url) as client:
        remote = client.open_stream(max_steps=4)
        assert_outputs_equal([remote.step(xs[0])], [local.step(xs[0])])
        saved = remote.get_state()
        server.drop_connections()
        with pytest.raises(ConnectionError):
            remote.step(xs[1])
        with pytest.raises(StreamLostError, match="set_state"):
            remote.step(xs[1])
        remote.set_state(saved)  # reconnects and re-opens with max_steps=4
        assert_outputs_equal([remote.step(xs[1])], [local.step(xs[1])])


def test_async_flavour_and_open_checks(server, model):
    async def main():
        client = await AsyncClient.connect(server.url)
        async with client:
            with pytest.raises(ValueError, match=r"non-built-in classes here are \[\], got"):
                client.open_stream(stop=[{"class_name": "Mine", "config": {"threshold": 1}}])
            client.open_stream(stop=[{"class_name": "L2Norm", "config": {}}])  # any built-in
            with pytest.raises(ValueError, match="max_steps"):
                client.open_stream(max_steps=99)
            streams = [client.open_stream() for _ in range(16)]
            x = np.full(3, 0.3, np.float32)
            outs = await asyncio.gather(*(s.step(x) for s in streams))
            assert client.messages_sent <= 2  # 16 steps (and opens) in one message
            return outs

    outs = asyncio.run(main())
    assert_outputs_equal(outs, [sg.Stream(model).step(np.full(3, 0.3, np.float32))] * 16)
