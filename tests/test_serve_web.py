"""The service seen from browsers and operators, on the session's Serve.

Two applications of the LiteRT export: `/web` (no token, small limits)
and `/webtok` (a token, one extra allowed origin). Checked with plain
WebSocket / HTTP clients that set `Origin` as a browser would: the Origin
check, the subprotocol token, and `GET /metrics` after a known workload.
The real-browser tests are in `test_playground.py`.
"""

import asyncio
import json
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
parser = pytest.importorskip("prometheus_client.parser")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

from conftest import WEB_ALLOWED_ORIGIN as ALLOWED, WEB_TOKEN as TOKEN  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVIL = "https://evil.example"
HEAD = lambda t: [{"class_name": "StopHead", "config": {"threshold": t}}]  # noqa: E731


def http(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


def talk(url, messages, **options):
    """Connects (websockets' `connect` options: `origin`, `subprotocols`,
    `additional_headers`), sends each message, returns `(subprotocol, replies)`."""
    async def main():
        async with ws_connect(url + "/v1/streams", **options) as ws:
            replies = []
            for message in messages:
                await ws.send(message if isinstance(message, str) else json.dumps(message))
                replies.append(json.loads(await ws.recv()))
            return ws.subprotocol, replies
    return asyncio.run(main())


def refused(url, **options):
    """The HTTP status of a refused handshake (fails if it is accepted)."""
    with pytest.raises(websockets.InvalidStatus) as info:
        talk(url, [], **options)
    return info.value.response.status_code


def test_origin_check_websocket(web_serve):
    step = [[{"id": "a", "x": [0.5, 0.0, 0.1]}]]
    ws, own = web_serve["ws"], web_serve["self"]
    assert "out" in talk(ws, step)[1][0][0]  # a program: no Origin
    assert "out" in talk(ws, step, origin=own)[1][0][0]  # the server's own pages
    assert refused(ws, origin=EVIL) == 403
    assert refused(ws, origin="null") == 403
    assert refused(ws, origin=ALLOWED) == 403  # allowed on /webtok only
    assert refused(ws, origin=own.replace("127.0.0.1", "localhost")) == 403


def test_subprotocol_token(web_serve, cli_tflite):
    ws, own = web_serve["wstok"], web_serve["self"]
    x = [0.5, 0.0, 0.1]
    expected = sg.LiteStream(cli_tflite).step(np.array(x, np.float32))
    good = ["streamgen.v1", f"bearer.{TOKEN}"]
    protocol, replies = talk(ws, [[{"id": "a", "x": x}]], origin=own, subprotocols=good)
    assert protocol == "streamgen.v1"  # the token is never echoed
    assert_outputs_equal([np.array(replies[0][0]["out"], np.float32)], [expected])
    assert talk(ws, [], origin=ALLOWED, subprotocols=good)[0] == "streamgen.v1"
    assert refused(ws, origin=own, subprotocols=["streamgen.v1", "bearer.wrong"]) == 403
    assert refused(ws, origin=own, subprotocols=["streamgen.v1"]) == 403
    assert refused(ws, origin=EVIL, subprotocols=good) == 403  # a token does not lift it
    # Programs: the header, no Origin, no subprotocol, as before.
    protocol, replies = talk(ws, [[0.5, 0.0, 0.1]], additional_headers=AUTH)
    assert protocol is None and "out" not in replies[0]  # a bare step: the bare reply
    assert_outputs_equal([np.array(replies[0], np.float32)], [expected])
    with sg.connect(ws, token=TOKEN) as client:
        assert_outputs_equal([client.open_stream().step(x)], [expected])
    assert refused(ws) == 403


def test_origin_check_http(web_serve):
    base, own = web_serve["webtok"], web_serve["self"]
    assert http(base + "/healthz", {"Origin": EVIL})[0] == 200
    assert http(base + "/v1/model", {"Origin": EVIL, **AUTH})[0] == 403
    assert http(base + "/metrics", {"Origin": EVIL, **AUTH})[0] == 403
    assert http(base + "/v1/model", {"Origin": ALLOWED, **AUTH})[0] == 200
    assert http(base + "/v1/model", {"Origin": own, **AUTH})[0] == 200
    assert http(base + "/v1/model", {"Origin": own})[0] == 401
    assert http(base + "/v1/model", AUTH)[0] == 200
    assert http(web_serve["web"] + "/v1/model", {"Origin": EVIL})[0] == 403
    assert http(web_serve["web"] + "/v1/model")[0] == 200


# ---------------------------------------------------------------------- #
# Metrics.
# ---------------------------------------------------------------------- #
def scrape(url, headers=None):
    """`{(name, labels minus replica): value}` summed over replicas, and the replicas."""
    status, text, response_headers = http(url + "/metrics", headers)
    assert status == 200, text
    assert response_headers["Content-Type"].startswith("text/plain; version=0.0.4")
    values, replicas = {}, set()
    for family in parser.text_string_to_metric_families(text):
        assert family.name.startswith("streamgen_")
        for sample in family.samples:
            labels = dict(sample.labels)
            replicas.add(labels.pop("replica"))
            key = (sample.name, tuple(sorted(labels.items())))
            values[key] = values.get(key, 0.0) + sample.value
    return values, replicas


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_after_a_known_workload(web_serve):
    url = web_serve["web"]
    before, replicas = scrape(url)
    assert len(replicas) == 1
    x = [0.5, 0.0, 0.1]
    messages = [
        [{"id": "a", "open": {"max_steps": 3, "stop": HEAD(0.99)}},  # long outputs
         {"id": "b", "open": {}}],  # no tick
        [{"id": "a", "x": x}, {"id": "b", "x": [0.1, 0.2, 0.3]}],  # 1 tick of 2 rows
        [{"id": "a", "x": x}, {"id": "a", "x": x}],  # 2 ticks (phases) of 1 row
        x,  # the default stream: 1 tick
        [{"id": "a", "x": [1, 2]}, {"id": "b", "x": x}],  # a bad request; 1 tick
        "[0.5, 0, ",  # malformed: a bad request, no tick
        [{"id": str(i), "open": {}} for i in range(8)],  # 5 fit (8 - a, b, ""): 3 over
    ]
    _, replies = talk(web_serve["ws"], messages)
    frames = sum(len(item["out"]) for reply in replies if isinstance(reply, list)
                 for item in reply if isinstance(item, dict) and "out" in item)
    frames += len(replies[3])
    assert ["--max-streams" in item.get("error", "") for item in replies[6]] == [False] * 5 + [
        True] * 3
    status, _, _ = http(url + "/v1/model", {"Origin": EVIL})  # an origin refusal
    assert status == 403
    assert refused(web_serve["ws"], origin=EVIL) == 403
    with pytest.raises(websockets.ConnectionClosed):  # over 16 KiB: 1009
        talk(web_serve["ws"], ["[" + " " * (1 << 15) + "]"])
    after, replicas = scrape(url)
    assert len(replicas) == 1
    d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
    assert d("streamgen_outer_steps_total") == 6
    assert d("streamgen_inner_steps_total") == frames > 0
    assert d("streamgen_tick_rows_count") == 5  # the ticks
    assert d("streamgen_tick_rows_sum") == 6
    assert d("streamgen_tick_rows_bucket", le="1.0") == 4
    assert d("streamgen_tick_seconds_count") == 5
    assert d("streamgen_messages_total") == 7
    assert d("streamgen_message_seconds_count") == 7
    assert d("streamgen_errors_total", kind="bad_request") == 2
    assert d("streamgen_errors_total", kind="limit") == 3
    assert d("streamgen_errors_total", kind="origin") == 2
    assert d("streamgen_errors_total", kind="oversize") == 1
    assert d("streamgen_errors_total", kind="auth") == 0
    assert after[("streamgen_connections", ())] == 0  # all closed: streams released
    assert after[("streamgen_open_streams", ())] == 0


def test_metrics_auth_errors_and_token(web_serve):
    url = web_serve["webtok"]
    before, _ = scrape(url, AUTH)
    assert http(url + "/metrics")[0] == 401
    assert refused(web_serve["wstok"], subprotocols=["streamgen.v1", "bearer.nope"]) == 403
    after, _ = scrape(url, AUTH)
    assert delta(before, after, "streamgen_errors_total", kind="auth") == 2
