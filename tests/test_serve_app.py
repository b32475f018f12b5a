"""`streamgen serve`'s application on a real local Ray cluster.

ONE session-scoped cluster (2 CPUs, 127.0.0.1) with two applications:
`/` runs a `.keras` model (TensorFlow) with a token and batching on; `/lite`
runs its LiteRT export with batching off and a short idle timeout. Real
WebSocket and HTTP clients. The replica-kill test runs last.
"""

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import streamgen as sg
from helpers import assert_outputs_equal

pytestmark = [pytest.mark.slow, pytest.mark.ray]

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_serve(serve_port, cli_model_path, cli_tflite):
    """The two applications on the session's Serve proxy (`serve_port`)."""
    from streamgen.serve.app import build_app

    port = serve_port
    serve.run(build_app(cli_model_path, token=TOKEN, max_streams=40),
              name="main", route_prefix="/")
    serve.run(build_app(cli_tflite, max_batch_size=1, idle_timeout=1.5),
              name="lite", route_prefix="/lite")
    yield {"port": port, "main": f"ws://127.0.0.1:{port}",
           "lite": f"ws://127.0.0.1:{port}/lite", "http": f"http://127.0.0.1:{port}"}
    # Left to `serve_port`'s `serve.shutdown()` at the session's end, which
    # ends every application at once (`serve.delete` waits ~3 s for each).


def exchange(url, messages, headers=AUTH):
    """Sends each message and collects its reply (parsed)."""
    async def main():
        async with ws_connect(url + "/v1/streams", additional_headers=headers,
                              max_size=None) as ws:
            replies = []
            for message in messages:
                await ws.send(message if isinstance(message, str) else json.dumps(message))
                replies.append(json.loads(await ws.recv()))
            return replies
    return asyncio.run(main())


def http(url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


HEAD = lambda t: [{"class_name": "StopHead", "config": {"threshold": t}}]  # noqa: E731


def test_multiplexed_round_trips_equal_local_streams(ray_serve, cli_model):
    xs = np.random.default_rng(0).uniform(-1, 1, size=(3, 4, 3)).astype(np.float32)
    settings = {"a": (HEAD(0.3), 5), "b": (None, 2), "c": (HEAD(0.8), None)}
    local = {k: sg.Stream(cli_model, stop=s, max_steps=c) for k, (s, c) in settings.items()}
    messages = [[{"id": k, "open": {"stop": s, "max_steps": c}} for k, (s, c) in settings.items()]]
    expected = []
    for t in range(4):
        message = [{"id": k, "x": xs[i, t].tolist()} for i, k in enumerate(settings)]
        expected.append([local[k].step(xs[i, t]) for i, k in enumerate(settings)])
        if t == 1:
            message += [{"id": "a", "reset": True}, {"id": "a", "x": xs[0, t].tolist()}]
            local["a"].reset()
            expected[-1].append(local["a"].step(xs[0, t]))
        messages.append(message)
    messages += ["[0.5, 0, 0.1]", "[0.5, 0, ", [{"id": "a", "get_state": True}]]
    replies = exchange(ray_serve["main"], messages)
    assert replies[0] == [{"id": k, "ok": True} for k in settings]
    for reply, outs in zip(replies[1:5], expected):
        got = [item["out"] for item in reply if "out" in item]
        assert_outputs_equal(got, outs)
    assert replies[2][3] == {"id": "a", "ok": True}
    assert_outputs_equal([replies[5]], [sg.Stream(cli_model).step(np.array([0.5, 0, 0.1]))])
    assert replies[6][0]["id"] is None and "malformed JSON" in replies[6][0]["error"]
    assert replies[7][0]["state"]["format"] == "streamgen-state/2"  # the connection was kept


def test_bad_requests_each_fail_alone(ray_serve):
    replies = exchange(ray_serve["main"], [
        [{"id": "a", "x": [0.1, 0.2, 0.3]}, {"id": "a", "x": [1, 2]}, 7, {"id": 1, "x": [1]},
         {"id": "a", "open": {"stop": [{"class_name": "Mine", "config": {"threshold": 1}}]}},
         {"id": "a", "open": {"max_steps": 0}}, {"id": "a", "set_state": {"format": "no"}},
         {"id": "q", "close": True}, {"id": "a", "bogus": 1}, {"id": "a", "x": [0.1, 0.2, 0.3]}],
        "[1, 2]", '{"id": "a"}'])
    items = replies[0]
    assert "out" in items[0] and "out" in items[-1]
    errors = [item.get("error", "") for item in items[1:-1]]
    assert "input_size=3, got shape (2,)" in errors[0]
    assert "request 2: expected a JSON object" in errors[1]
    assert '"id" to be a string' in errors[2]
    assert "non-built-in classes here are [], got [Mine()]" in errors[3]
    assert "max_steps" in errors[4]
    assert "streamgen-state/2" in errors[5]
    assert errors[6] == "no open stream with id 'q'"
    assert "unknown keys ['bogus']" in errors[7]
    assert "input_size=3" in replies[1]["error"]
    assert "expected a JSON array of requests" in replies[2][0]["error"]


def test_auth_http_and_decode(ray_serve, cli_model_path, tmp_path):
    from click.testing import CliRunner

    from streamgen.cli.main import cli

    with pytest.raises(websockets.InvalidStatus, match="403"):
        exchange(ray_serve["main"], [], headers=None)
    with pytest.raises(websockets.InvalidStatus, match="403"):
        exchange(ray_serve["main"], [], headers={"Authorization": "Bearer wrong"})
    base = ray_serve["http"]
    assert http(base + "/healthz")[0] == 200
    assert http(base + "/v1/model")[0] == 401
    status, body = http(base + "/v1/model", headers=AUTH)
    info = json.loads(body)
    assert status == 200 and info["input_size"] == 3 and info["fingerprint"].startswith("sha256:")
    assert info["stop"] == [{"class_name": "StopHead", "config": {"threshold": 0.5}}]
    lines = b"# a comment\n0.5 0 0.1\n1, 1, -0.5\n\n[0.2, 0.1, 0.9]\n"
    local = CliRunner().invoke(cli, ["stream", "--model", cli_model_path], input=lines)
    ndjson = {**AUTH, "Content-Type": "application/x-ndjson"}
    status, body = http(base + "/v1/lines", data=lines, headers=ndjson)
    assert status == 200 and body == local.stdout
    status, body = http(base + "/v1/lines", data=b"0.5 0 0.1\n1 2\n", headers=ndjson)
    assert status == 400 and json.loads(body) == {"error": "<body>:2: expected 3 numbers, got 2"}
    assert http(base + "/v1/lines", data=lines)[0] == 401


def test_limits(ray_serve):
    async def main():
        url = ray_serve["main"] + "/v1/streams"
        # Over 1 MiB: close 1009.
        async with ws_connect(url, additional_headers=AUTH, max_size=None) as ws:
            await ws.send("[" + " " * (1 << 20) + "]")
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1009
        # --max-streams 40 per replica: the 41st stream is refused alone.
        async with ws_connect(url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps([{"id": str(i), "x": [0.1, 0.2, 0.3]} for i in range(41)]))
            reply = json.loads(await ws.recv())
            assert all("out" in item for item in reply[:40])
            assert "maximum of 40 streams" in reply[40]["error"]
        # A slow client (never reads) does not stall another connection; past
        # 16 unanswered messages it is closed (1013, issue 19).
        async with ws_connect(url, additional_headers=AUTH) as slow, \
                ws_connect(url, additional_headers=AUTH) as fast:
            with pytest.raises(websockets.ConnectionClosed):
                for _ in range(300):
                    await slow.send(json.dumps([{"id": "s", "x": [0.1, 0.2, 0.3]}] * 20))
                    await asyncio.sleep(0)
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
            assert slow.close_code == 1013
            start = time.monotonic()
            for _ in range(5):
                await fast.send("[0.1, 0.2, 0.3]")
                await asyncio.wait_for(fast.recv(), 10)
            assert time.monotonic() - start < 5
    asyncio.run(main())
    # Idle streams are dropped after --idle-timeout (1.5 s on /lite).
    async def idle():
        async with ws_connect(ray_serve["lite"] + "/v1/streams") as ws:
            await ws.send(json.dumps([{"id": "i", "x": [0.1, 0.2, 0.3]}]))
            await ws.recv()
            await asyncio.sleep(3.5)
            await ws.send(json.dumps([{"id": "i", "get_state": True}]))
            return json.loads(await ws.recv())
    assert "--idle-timeout" in asyncio.run(idle())[0]["error"]


# Any built-in stop mixes, one message: `[]`, `L2Norm` on the StopHead
# model, and four different mixes.
MIXES = [
    ([], None),
    ([{"class_name": "L2Norm", "config": {"threshold": 0.6}}], None),
    ([{"class_name": "L2Norm", "config": {"threshold": 0.3, "mode": "below"}}], 5),
    ([{"class_name": "StopHead", "config": {"threshold": 0.7}},
      {"class_name": "L2Norm", "config": {"threshold": 1.2}}], None),
    ([{"class_name": "StopHead", "config": {"threshold": 0.2}},
      {"class_name": "L2Norm", "config": {"threshold": 0.9}},
      {"class_name": "L2Norm", "config": {"threshold": 0.2, "mode": "below"}}], 7),
    (HEAD(0.4), None),
]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("app", ["main", "lite"])
def test_any_built_in_stop_mixes_in_one_message_equal_local_streams(ray_serve, cli_model, app):
    xs = np.random.default_rng(5).uniform(-1, 1, size=(len(MIXES), 4, 3)).astype(np.float32)
    ids = [f"m{n}" for n in range(len(MIXES))]
    local = [sg.Stream(cli_model, stop=stop, max_steps=cap) for stop, cap in MIXES]
    messages = [[{"id": i, "open": {"stop": stop, "max_steps": cap}}
                 for i, (stop, cap) in zip(ids, MIXES)]]
    expected = []
    for t in range(4):
        messages.append([{"id": i, "x": xs[n, t].tolist()} for n, i in enumerate(ids)])
        expected.append([stream.step(xs[n, t]) for n, stream in enumerate(local)])
    replies = exchange(ray_serve[app], messages)
    assert replies[0] == [{"id": i, "ok": True} for i in ids]
    for reply, outs in zip(replies[1:], expected):
        assert [item["id"] for item in reply] == ids
        assert_outputs_equal([item["out"] for item in reply], outs)
    per_stream = {tuple(len(outs[n]) for outs in expected) for n in range(len(MIXES))}
    assert len(per_stream) >= 3  # the mixes really differ (cap, L2, head)


def test_state_across_keras_lite_and_local_batching_off(ray_serve, cli_model, cli_tflite):
    xs = np.random.default_rng(3).uniform(-1, 1, size=(6, 3)).astype(np.float32)
    lite = sg.LiteStream(cli_tflite, stop=HEAD(0.3), max_steps=6)
    local = sg.Stream(cli_model, stop=HEAD(0.3), max_steps=6)
    with sg.connect(ray_serve["main"], token=TOKEN) as main, sg.connect(ray_serve["lite"]) as off:
        on = main.open_stream(stop=HEAD(0.3), max_steps=6)
        moved = off.open_stream(stop=HEAD(0.3), max_steps=6)
        many = [off.open_stream() for _ in range(4)]  # batching off: one row per tick
        outs = [s.step(xs[0]) for s in many]
        assert_outputs_equal(outs, [sg.Stream(cli_model).step(xs[0])] * 4)
        for x in xs[:2]:
            assert_outputs_equal([on.step(x)], [local.step(x)])
            lite.step(x)
        moved.set_state(on.get_state())  # TensorFlow replica -> LiteRT replica
        assert_outputs_equal([moved.step(xs[2])], [local.step(xs[2])])
        lite.set_state(moved.get_state())  # remote -> LiteStream
        on.set_state(lite.get_state())  # LiteStream -> remote
        expected = local.step(xs[3])
        assert_outputs_equal([lite.step(xs[3])], [expected])
        assert_outputs_equal([on.step(xs[3])], [expected])


def test_replica_kill_and_resume(ray_serve, cli_model):
    xs = np.random.default_rng(4).uniform(-1, 1, size=(3, 3)).astype(np.float32)
    local = sg.Stream(cli_model, max_steps=5)
    with sg.connect(ray_serve["main"], token=TOKEN) as client:
        remote = client.open_stream(max_steps=5)
        assert_outputs_equal([remote.step(xs[0])], [local.step(xs[0])])
        saved = remote.get_state()
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith("SERVE_REPLICA::main#")]
        assert len(names) == 1
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        with pytest.raises(ConnectionError):
            for _ in range(50):  # the close reaches the client
                remote.step(xs[1])
                time.sleep(0.1)
        deadline = time.monotonic() + 120
        while True:  # Serve starts a new replica; reconnect, restore, continue
            try:
                remote.set_state(saved)
                break
            except ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(1)
        assert_outputs_equal([remote.step(xs[1])], [local.step(xs[1])])
        assert_outputs_equal([remote.step(xs[2])], [local.step(xs[2])])


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("app", ["main", "lite"])
def test_sampled_stop_with_a_seed_equals_local_streams(ray_serve, cli_model, app):
    """The app's `open` takes a sampler and a seed: `StopSample` (any frame
    kind) with two seeds equals local streams of those seeds; a random
    sampler on these `mse` frames is an error item naming the frame kind."""
    headers = AUTH if app == "main" else None
    status, body = http(ray_serve[app].replace("ws://", "http://") + "/v1/model", headers=headers)
    info = json.loads(body)
    assert status == 200 and info["frame_loss"] == "mse"
    assert info["sampler"] == {"class_name": "Greedy", "config": {}}
    stop = [{"class_name": "StopSample", "config": {"temperature": 2.0}}]
    xs = np.random.default_rng(8).uniform(-1, 1, size=(5, 3)).astype(np.float32)
    opens = [{"id": "s7", "open": {"stop": stop, "sampler": "greedy", "seed": 7}},
             {"id": "s8", "open": {"stop": stop, "seed": 8}},
             {"id": "bad", "open": {"sampler": {"class_name": "TopK", "config": {"k": 2}}}},
             {"id": "s9", "open": {"seed": 2**32}}]
    messages = [opens] + [[{"id": i, "x": x.tolist()} for i in ("s7", "s8")] for x in xs]
    replies = exchange(ray_serve[app], messages, headers=headers or {})
    assert replies[0][:2] == [{"id": "s7", "ok": True}, {"id": "s8", "ok": True}]
    assert "'mse'" in replies[0][2]["error"] and "`sampler`" in replies[0][2]["error"]
    assert "`seed`" in replies[0][3]["error"]
    for n, seed in enumerate((7, 8)):
        local = sg.Stream(cli_model, stop=stop, seed=seed)
        assert_outputs_equal([reply[n]["out"] for reply in replies[1:]],
                             [local.step(x) for x in xs])
    lengths = [[len(reply[n]["out"]) for reply in replies[1:]] for n in range(2)]
    assert lengths[0] != lengths[1]  # the seeds draw other lengths
