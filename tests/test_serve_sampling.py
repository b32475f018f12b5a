"""Sampling through the server: `open` with a sampler and a seed.

The server's session and batcher (no Ray) and the remote client against the
in-process server of `test_client.py` equal a local `sg.Stream` with the
same sampler and seed: lengths exactly, frames to 1e-5. Streams with
different samplers, temperatures and seeds share one batched step; a
state moved with get_state / set_state continues exactly; a stream opened
without a seed gets a fresh one, which its state carries.
"""

import asyncio
import json

import numpy as np
import pytest

import streamgen as sg

from streamgen import randomness, samplers
from streamgen.remote import protocol
from streamgen.remote import wire
from streamgen.remote.client import AsyncClient
from streamgen.serve.batcher import Batcher, StateTable
from streamgen.serve.session import Session, format_items

SAMPLE = [{"class_name": "StopSample", "config": {"temperature": 1.0}}]
# (sampler as JSON, seed, stop): four streams of one message.
MIX = [
    ({"class_name": "Random", "config": {"temperature": 1.0}}, 7, SAMPLE),
    ({"class_name": "TopK", "config": {"k": 2, "temperature": 0.7}}, 8, SAMPLE),
    ({"class_name": "TopP", "config": {"p": 0.8, "temperature": 1.5}}, 2**32 - 1,
     [{"class_name": "StopSample", "config": {"temperature": 0.5}},
      {"class_name": "StopHead", "config": {"threshold": 0.9}}]),
    ("greedy", 9, [{"class_name": "StopHead", "config": {"threshold": 0.5}}]),
]


@pytest.fixture(scope="session")
def models(sampling_models):
    return sampling_models


@pytest.fixture(scope="session")
def lite_paths(sampling_lite_paths):
    return sampling_lite_paths


def inputs(steps, rows=None, seed=0):
    shape = (steps, 3) if rows is None else (rows, steps, 3)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


class Server:
    """A replica's session and batcher (no Ray); `send` is one client message."""

    def __init__(self, runtime, max_batch_size=1024):
        self.runtime = runtime
        self.table = StateTable(runtime, capacity=2)  # grows
        self.batcher = Batcher(self.table, max_batch_size)
        self.session = Session(self.table)
        self.calls = []
        step = self.batcher.step
        self.batcher.step = lambda *a: self.calls.append(len(a[0])) or step(*a)

    def send(self, requests):
        """`requests`: dicts -> the reply items, as the client reads them."""
        async def submit(steps):
            return self.batcher.run(steps)
        message = protocol.parse_message(json.dumps(requests))
        items = asyncio.run(self.session.handle(message, submit))
        return protocol.parse_reply(format_items(items))


def steps(server, stream_id, xs):
    """Steps one stream through `xs`, one message each; its `Out[i]`s."""
    outs = []
    for x in xs:
        item, = server.send([{"id": stream_id, "x": x.tolist()}])
        assert "out" in item, item
        outs.append(wire.frames_array(item["out"], server.runtime.output_size))
    return outs


def assert_same(got, expected):
    assert [len(o) for o in got] == [len(o) for o in expected]  # lengths exactly
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=1e-5)


def open_runtime(models, lite_paths, kind, where):
    return sg.open_runtime(models[kind] if where == "keras" else lite_paths[kind])


# ---------------------------------------------------------------------- #
# A stream opened with a sampler and a seed.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("kind, where", [
    ("categorical", "keras"), ("categorical", "tflite"), ("mdn", "keras"),
    pytest.param("mdn", "tflite", marks=pytest.mark.slow)])  # a LiteRT conversion (~6 s)
def test_server_stream_equals_local_stream_of_the_same_seed(models, lite_paths, kind, where):
    runtime = open_runtime(models, lite_paths, kind, where)
    server, xs = Server(runtime), inputs(8)
    sampler = {"class_name": "TopK", "config": {"k": 3, "temperature": 0.8}}
    item, = server.send([{"id": "a", "open": {"stop": SAMPLE, "max_steps": 5,
                                               "sampler": sampler, "seed": 7}}])
    assert item == {"id": "a", "ok": True}
    got = steps(server, "a", xs)
    local = sg.Stream(runtime, stop=SAMPLE, max_steps=5, sampler=samplers.TopK(3, 0.8), seed=7)
    expected = [local.step(x) for x in xs]
    assert_same(got, expected)
    assert len({len(o) for o in expected}) >= 2  # StopSample drew several lengths
    other = sg.Stream(runtime, stop=SAMPLE, max_steps=5, sampler=samplers.TopK(3, 0.8), seed=8)
    assert not all(np.array_equal(a, other.step(x)) for a, x in zip(got, xs))


@pytest.mark.parametrize("kind", ["categorical", "mdn"])
def test_four_samplers_in_one_message_share_one_step_and_equal_local(models, kind):
    runtime = sg.open_runtime(models[kind])
    server, xs = Server(runtime), inputs(6, rows=len(MIX), seed=3)
    ids = [f"s{n}" for n in range(len(MIX))]
    opened = server.send([{"id": i, "open": {"sampler": sampler, "seed": seed, "stop": stop}}
                          for i, (sampler, seed, stop) in zip(ids, MIX)])
    assert opened == [{"id": i, "ok": True} for i in ids]
    local = [sg.Stream(runtime, sampler=sampler, seed=seed, stop=stop)
             for sampler, seed, stop in MIX]
    got, expected = [[] for _ in MIX], [[] for _ in MIX]
    for t in range(xs.shape[1]):  # one message (one tick) holds every stream's step
        items = server.send([{"id": i, "x": xs[n, t].tolist()} for n, i in enumerate(ids)])
        for n, item in enumerate(items):
            got[n].append(wire.frames_array(item["out"], runtime.output_size))
            expected[n].append(local[n].step(xs[n, t]))
    for n in range(len(MIX)):
        assert_same(got[n], expected[n])
    assert server.calls == [len(MIX)] * xs.shape[1]  # one batched call per message


@pytest.mark.parametrize("where", ["keras", "tflite"])
def test_get_state_then_set_state_on_a_new_stream_continues_exactly(models, lite_paths, where):
    runtime = open_runtime(models, lite_paths, "mdn", where)
    server, xs = Server(runtime), inputs(9, seed=5)
    options = {"sampler": {"class_name": "TopP", "config": {"p": 0.9}}, "stop": SAMPLE}
    server.send([{"id": "a", "open": {**options, "seed": 11}}])
    steps(server, "a", xs[:4])
    (item,) = server.send([{"id": "a", "get_state": True}])
    saved = item["state"]
    assert randomness.decode(np.asarray(wire.load_state(saved)[0])[:, -4:])[0].tolist() == [11]
    uninterrupted = steps(server, "a", xs[4:])
    server.send([{"id": "b", "open": {**options, "seed": 99}}])  # another seed and history
    steps(server, "b", xs[:2] * 2)
    assert server.send([{"id": "b", "set_state": saved}]) == [{"id": "b", "ok": True}]
    assert_same(steps(server, "b", xs[4:]), uninterrupted)
    # The same state continues a local stream exactly too.
    local = sg.Stream(runtime, sampler=samplers.TopP(0.9), stop=SAMPLE, seed=1)
    local.set_state(runtime.unpack(wire.load_state(saved)[0]))
    assert_same([local.step(x) for x in xs[4:]], uninterrupted)


def test_reset_and_reopen_start_again_from_the_seed(models):
    runtime = sg.open_runtime(models["categorical"])
    server, xs = Server(runtime), inputs(5, seed=6)
    server.send([{"id": "a", "open": {"sampler": "random", "seed": 3, "stop": SAMPLE}}])
    first = steps(server, "a", xs)
    assert server.send([{"id": "a", "reset": True}]) == [{"id": "a", "ok": True}]
    assert_same(steps(server, "a", xs), first)
    server.send([{"id": "a", "open": {"sampler": "random", "seed": 3, "stop": SAMPLE}}])
    assert_same(steps(server, "a", xs), first)


def test_two_seeds_differ_and_no_seed_draws_a_fresh_one_the_state_carries(models):
    runtime = sg.open_runtime(models["categorical"])
    server, xs = Server(runtime), inputs(8, seed=2)
    opens = [{"id": "7", "open": {"sampler": "random", "seed": 7}},
             {"id": "8", "open": {"sampler": "random", "seed": 8}},
             {"id": "u", "open": {"sampler": "random"}},
             {"id": "v", "open": {"sampler": "random", "seed": None}}]
    assert all(item.get("ok") for item in server.send(opens))
    outs = {i: steps(server, i, xs) for i in "78uv"}
    same = lambda a, b: all(np.array_equal(p, q) for p, q in zip(a, b))  # noqa: E731
    assert not same(outs["7"], outs["8"]) and not same(outs["u"], outs["v"])
    seeds = {}
    for i in "uv":
        (item,) = server.send([{"id": i, "get_state": True}])
        seed, position = randomness.decode(wire.load_state(item["state"])[0][:, -4:])
        assert position.tolist() == [len(xs)]
        seeds[i] = int(seed[0])
        local = sg.Stream(runtime, sampler="random", seed=seeds[i])  # replays it
        assert_same(outs[i], [local.step(x) for x in xs])
    assert seeds["u"] != seeds["v"]
    # A stream opened by its first step (no "open") gets a fresh seed too.
    steps(server, "w", xs[:1])
    (item,) = server.send([{"id": "w", "get_state": True}])
    assert randomness.decode(wire.load_state(item["state"])[0][:, -4:])[1].tolist() == [1]


# ---------------------------------------------------------------------- #
# Bad values: one error item, naming the field.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("kind, open_value, words", [
    ("categorical", {"sampler": "sideways"}, ["`sampler`", "sideways"]),
    ("categorical", {"sampler": {"class_name": "TopK", "config": {"k": -1}}},
     ["`sampler`", "`k`"]),
    ("categorical", {"sampler": {"class_name": "TopK", "config": {"kk": 2}}},
     ["`sampler`", "k and temperature"]),
    ("categorical", {"sampler": 3}, ["`sampler`"]),
    ("categorical", {"sampler": "random", "seed": -1}, ["`seed`", "-1"]),
    ("categorical", {"seed": 2**32}, ["`seed`", str(2**32)]),
    ("categorical", {"seed": 1.5}, ["`seed`"]),
    ("categorical", {"seed": "7"}, ["`seed`"]),
    ("categorical", {"seed": True}, ["`seed`"]),
    ("mse", {"sampler": "random"}, ["`sampler`", "'mse'"]),
    ("mse", {"sampler": {"class_name": "TopP", "config": {"p": 0.5}}, "seed": 1},
     ["`sampler`", "'mse'"]),
])
def test_bad_sampler_or_seed_is_an_error_item_naming_the_field(models, kind, open_value,
                                                               words):
    server = Server(sg.open_runtime(models[kind]))
    items = server.send([{"id": "a", "open": open_value}, {"id": "b", "open": {"seed": 1}}])
    assert items[1] == {"id": "b", "ok": True}  # the other request still runs
    assert set(items[0]) == {"id", "error"} and items[0]["id"] == "a"
    for word in words:
        assert word in items[0]["error"], items[0]["error"]
    assert "a" not in server.session.rows  # nothing was opened


def test_greedy_on_mse_is_accepted_and_equals_today(models):
    runtime = sg.open_runtime(models["mse"])
    server, xs = Server(runtime), inputs(4)
    server.send([{"id": "a", "open": {"sampler": "greedy", "seed": 5}}])
    local = sg.Stream(runtime)
    assert_same(steps(server, "a", xs), [local.step(x) for x in xs])


def test_model_description_names_the_frame_kind_and_sampler(models, lite_paths):
    for kind in ("categorical", "mdn"):
        for runtime in (sg.open_runtime(models[kind]), sg.open_runtime(lite_paths[kind])):
            info = runtime.describe()
            assert info["frame_loss"] == kind
            assert info["sampler"] == {"class_name": "Greedy", "config": {}}
    runtime = sg.open_runtime(models["mdn"], sampler=samplers.TopK(2))
    assert runtime.describe()["sampler"] == {"class_name": "TopK",
                                             "config": {"k": 2, "temperature": 1.0}}


# ---------------------------------------------------------------------- #
# The remote client (the in-process server of test_client.py).
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def cat_server(models):
    from test_client import serving

    yield from serving(models["categorical"])


@pytest.fixture(scope="module")
def mse_server(models):
    from test_client import serving

    yield from serving(models["mse"])


@pytest.mark.parametrize("sampler", [samplers.TopK(3), "top-p",
                                     {"class_name": "Random", "config": {"temperature": 0.6}}],
                         ids=["object", "name", "config"])
def test_client_open_stream_with_sampler_and_seed_equals_local(cat_server, models, sampler):
    model, xs = models["categorical"], inputs(8, seed=8)
    with sg.connect(cat_server.url) as client:
        assert client.frame_loss == "categorical"
        assert client.sampler == samplers.Greedy()
        remote = client.open_stream(stop=SAMPLE, max_steps=6, sampler=sampler, seed=7)
        assert remote.seed == 7 and remote.sampler == samplers.get(sampler)
        got = [remote.step(x) for x in xs]
        local = sg.Stream(model, stop=SAMPLE, max_steps=6, sampler=sampler, seed=7)
        assert_same(got, [local.step(x) for x in xs])
        # State: the seed and position travel; a restored local stream continues.
        state = remote.get_state()
        seed, position = randomness.decode(state["random"][0])
        assert seed.tolist() == [7] and position.tolist() == [len(xs)]
        remote.reset()  # the same seed again, from position 0
        assert_same([remote.step(x) for x in xs], got)
        # No seed: a fresh one, carried by the state, different per stream.
        a, b = (client.open_stream(sampler=sampler, stop=SAMPLE) for _ in range(2))
        out_a, out_b = [a.step(x) for x in xs], [b.step(x) for x in xs]
        assert a.seed != b.seed
        assert randomness.decode(a.get_state()["random"][0])[0].tolist() == [a.seed]
        again = sg.Stream(model, sampler=sampler, stop=SAMPLE, seed=a.seed)
        assert_same(out_a, [again.step(x) for x in xs])
        assert not all(np.array_equal(p, q) for p, q in zip(out_a, out_b))


def test_client_state_moves_between_local_and_remote(cat_server, models):
    model, xs = models["categorical"], inputs(8, seed=9)
    options = dict(sampler=samplers.TopP(0.9, 1.2), stop=SAMPLE)
    local = sg.Stream(model, seed=21, **options)
    for x in xs[:3]:
        local.step(x)
    with sg.connect(cat_server.url) as client:
        remote = client.open_stream(seed=1, **options)
        remote.set_state(local.get_state())
        assert_same([remote.step(x) for x in xs[3:]], [local.step(x) for x in xs[3:]])


def test_async_client_sampler_seed_and_checks(cat_server, mse_server, models):
    model, xs = models["categorical"], inputs(5, seed=10)

    async def main():
        async with await AsyncClient.connect(cat_server.url) as client:
            with pytest.raises(ValueError, match="`seed`"):
                client.open_stream(seed=-3)
            with pytest.raises(ValueError, match="`sampler`"):
                client.open_stream(sampler="sideways")
            streams = [client.open_stream(sampler=s, seed=seed, stop=stop)
                       for s, seed, stop in MIX]
            outs = []
            for t in range(len(xs)):
                outs.append(await asyncio.gather(*(s.step(xs[t]) for s in streams)))
            return outs

    outs = asyncio.run(main())
    for n, (sampler, seed, stop) in enumerate(MIX):
        local = sg.Stream(model, sampler=sampler, seed=seed, stop=stop)
        assert_same([outs[t][n] for t in range(len(xs))], [local.step(x) for x in xs])
    with sg.connect(mse_server.url) as client:
        assert client.frame_loss == "mse"
        with pytest.raises(ValueError, match="frames are 'mse'"):
            client.open_stream(sampler=samplers.Random())
        client.open_stream(sampler="greedy", seed=3).step(xs[0])  # greedy applies


# ---------------------------------------------------------------------- #
# The playground page.
# ---------------------------------------------------------------------- #
def test_playground_page_has_the_sampling_controls():
    from streamgen.serve import playground

    html = playground.page()
    assert "<!-- SAMPLING" not in html and 'id="sampling-note"' not in html
    for control in ('<select id="sampler">', 'id="temperature"', 'id="top-k"', 'id="top-p"',
                    'id="seed"', 'id="sampler-note"'):
        assert control in html, control
    for value in ("greedy", "random", "top-k", "top-p"):
        assert f'<option value="{value}">' in html
    # The open message carries the sampler (samplers.serialize's form) and the seed.
    assert "open.seed = Number(seed)" in html and "sampler: samplerSetting()" in html
    assert html.index('id="seed"') < html.index('id="apply"')  # Apply sends them


def _browser():
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return sync_api, chromium


@pytest.mark.slow
@pytest.mark.browser
def test_playground_samples_like_a_local_stream(cat_server, mse_server, models):
    sync_api, chromium = _browser()
    model = models["categorical"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(cat_server.url.replace("ws://", "http://") + "/")
            page.wait_for_function("() => playground.connected && playground.seed !== null")
            options = page.eval_on_selector_all(
                "#sampler option", "os => os.filter(o => !o.hidden).map(o => o.value)")
            assert options == ["greedy", "random", "top-k", "top-p"]
            assert page.locator("#sampler-note").is_hidden()
            # Blank seed: the server drew one; the page read it from the state.
            drawn = page.evaluate("playground.seed")
            assert isinstance(drawn, int) and "drawn by the server" in page.inner_text(
                "#seed-used")
            page.select_option("#sampler", "top-k")
            assert page.locator("#top-p").is_hidden() and page.locator("#top-k").is_visible()
            page.fill("#top-k", "2")
            page.fill("#temperature", "0.7")
            page.fill("#seed", "7")
            page.click("#apply")
            page.wait_for_function("() => playground.settings.seed === 7 && playground.busy === 0")
            assert page.evaluate("playground.settings.sampler") == {
                "class_name": "TopK", "config": {"temperature": 0.7, "k": 2}}
            xs = inputs(5, seed=12).round(4)
            for x in xs:
                page.fill("#typed", " ".join(map(str, x.tolist())))
                page.press("#typed", "Enter")
                page.wait_for_function("() => playground.busy === 0")
            steps = page.evaluate("playground.steps")
            local = sg.Stream(model, sampler=samplers.TopK(2, 0.7), seed=7)
            assert_same([np.array(s["out"], np.float32).reshape(-1, 4) for s in steps],
                        [local.step(np.array(s["x"], np.float32)) for s in steps])
            assert len(steps) == len(xs) and not errors
            # An mse model: greedy alone, and a note why.
            page.goto(mse_server.url.replace("ws://", "http://") + "/")
            page.wait_for_function("() => playground.connected && playground.seed !== null")
            options = page.eval_on_selector_all(
                "#sampler option", "os => os.filter(o => !o.hidden).map(o => o.value)")
            assert options == ["greedy"]
            assert "frames are mse" in page.inner_text("#sampler-note")
            assert page.locator("#temperature").is_hidden() and not errors
        finally:
            browser.close()
