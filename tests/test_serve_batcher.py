"""`streamgen.serve.batcher` and `session`: the batched step, without Ray.

Equality with stepping each stream alone (`sg.Stream`) is the contract,
whatever the mix of thresholds, caps and resets.
"""

import asyncio
import json
import re

import numpy as np
import pytest

import streamgen as sg
from helpers import assert_outputs_equal, export_litert, make_model
from streamgen.remote import protocol
from streamgen.runtimes import base
from streamgen.serve.batcher import Batcher, LimitError, StateTable, TickLoop
from streamgen.serve.session import Session, expire_idle, format_items

HEAD = lambda t: [{"class_name": "StopHead", "config": {"threshold": t}}]  # noqa: E731


@pytest.fixture(scope="module")
def model():
    return make_model(seed=3, stop_scale=8.0)


@pytest.fixture(scope="module")
def runtime(model):
    return sg.open_runtime(model)


def inputs(n, t, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, t, 3)).astype(np.float32)


def handle(session, requests, batcher):
    async def submit(steps):
        return batcher.run(steps)
    message = protocol.parse_message(protocol.reply(requests))
    return asyncio.run(session.handle(message, submit))


def test_batcher_equals_streams_alone(model, runtime):
    settings = [(None, None), (HEAD(0.3), None), (HEAD(0.8), 4), (None, 2), (HEAD(0.5), 9)]
    xs = inputs(len(settings), 6)
    for max_batch_size in (1, 2, 1024):
        table = StateTable(runtime, capacity=2)  # grows
        batcher = Batcher(table, max_batch_size)
        rows = [table.allocate(("t", i), *runtime.options(stop, cap))
                for i, (stop, cap) in enumerate(settings)]
        got = [[] for _ in settings]
        for t in range(xs.shape[1]):
            live = [i for i in range(len(settings)) if (t + i) % 3 != 2]  # a changing subset
            outs = batcher.run([(rows[i], xs[i, t]) for i in live])
            for i, out in zip(live, outs):
                got[i].append(out)
        for i, (stop, cap) in enumerate(settings):
            stream = sg.Stream(model, stop=stop, max_steps=cap)
            live = [t for t in range(xs.shape[1]) if (t + i) % 3 != 2]
            assert_outputs_equal(got[i], [stream.step(xs[i, t]) for t in live])
    assert len(table) == len(settings)


def test_session_multiplexed_with_resets_equals_streams(model, runtime):
    table = StateTable(runtime)
    batcher = Batcher(table)
    session = Session(table)
    xs = inputs(3, 5, seed=1)
    opens = [{"id": "a", "open": {"stop": HEAD(0.3), "max_steps": 5}},
             {"id": "b", "open": {"max_steps": 3}}]
    items = handle(session, [protocol.request(r["id"], "open", r["open"]) for r in opens], batcher)
    assert [k for k, *_ in items] == ["ok", "ok"]
    local = {"a": sg.Stream(model, stop=HEAD(0.3), max_steps=5),
             "b": sg.Stream(model, max_steps=3), "c": sg.Stream(model)}
    got, expected = [], []
    for t in range(5):
        requests = []
        for i, name in enumerate("abc"):
            requests.append(protocol.step_request(name, xs[i, t]))
            expected.append(local[name].step(xs[i, t]))
        if t == 2:  # a resets in the middle of the message, then steps again
            requests.append(protocol.request("a", "reset"))
            requests.append(protocol.step_request("a", xs[0, t]))
            local["a"].reset()
            expected.append(local["a"].step(xs[0, t]))
        items = handle(session, requests, batcher)
        assert [kind for kind, *_ in items] == ["out"] * 3 + (["ok", "out"] if t == 2 else [])
        got.extend(value for kind, _, value in items if kind == "out")
    assert_outputs_equal(got, expected)


# Built-in stop mixes for the server tests: `[]` (the cap alone), `L2Norm`
# on a model whose own criterion is `StopHead`, and mixes of all three kinds.
MIXES = [
    [],
    [{"class_name": "L2Norm", "config": {"threshold": 0.6}}],
    [{"class_name": "L2Norm", "config": {"threshold": 0.3, "mode": "below"}},
     {"class_name": "StopHead", "config": {"threshold": 0.7}}],
    [{"class_name": "StopHead", "config": {"threshold": 0.2}},
     {"class_name": "L2Norm", "config": {"threshold": 0.9, "mode": "above"}},
     {"class_name": "L2Norm", "config": {"threshold": 0.2, "mode": "below"}}],
    None,
]


@pytest.mark.parametrize("kind", [  # tflite: a LiteRT conversion (~5 s), in the full run
    "keras", pytest.param("tflite", marks=pytest.mark.slow)])
def test_session_with_any_built_in_mixes_in_one_message_equals_streams(model, runtime, kind,
                                                                       tmp_path):
    if kind == "tflite":
        pytest.importorskip("ai_edge_litert")
        path = str(tmp_path / "m.tflite")
        export_litert(model, path)
        runtime = sg.open_runtime(path)
    table = StateTable(runtime, capacity=2)
    batcher = Batcher(table)
    session = Session(table)
    ids = [f"s{i}" for i in range(len(MIXES))]
    items = handle(session, [protocol.request(i, "open", {"stop": stop, "max_steps": cap})
                             for i, stop, cap in zip(ids, MIXES, [None, 6, None, 4, None])],
                   batcher)
    assert [k for k, *_ in items] == ["ok"] * len(MIXES)
    local = [sg.Stream(model, stop=stop, max_steps=cap)
             for stop, cap in zip(MIXES, [None, 6, None, 4, None])]
    xs = inputs(len(MIXES), 6, seed=4)
    calls, step = [], batcher.step
    batcher.step = lambda *arguments: calls.append(len(arguments[0])) or step(*arguments)
    got, expected = [], []
    for t in range(6):  # every stream's step in one message: one batched step
        items = handle(session, [protocol.step_request(i, xs[n, t]) for n, i in enumerate(ids)],
                       batcher)
        got.extend(value for _, _, value in items)
        expected.extend(stream.step(xs[n, t]) for n, stream in enumerate(local))
    assert_outputs_equal(got, expected)
    assert calls == [len(MIXES)] * 6  # one runtime call per message, every mix in it
    assert len({len(o) for o in expected}) >= 4  # the mixes really differ


def test_errors_fail_alone_and_keep_state(model, runtime):
    table = StateTable(runtime, max_streams=2)
    batcher = Batcher(table)
    session = Session(table)
    x = inputs(1, 2)[0]
    handle(session, [protocol.step_request("a", x[0])], batcher)
    saved = table.states[session.rows["a"]].copy()
    items = handle(session, [
        '{"id":"a","x":[1,2]}',
        protocol.request("a", "open", {"stop": [{"class_name": "Mine",
                                                  "config": {"threshold": 1.0}}]}),
        protocol.request("a", "open", {"max_steps": 99}),
        protocol.request("a", "set_state", {"format": "nope"}),
        protocol.request("zz", "close"),
        protocol.step_request("b", x[1]),  # the 2nd stream: fits
        protocol.step_request("c", x[1]),  # the 3rd: over --max-streams
        '{"id":"a","x":[1e39,0,0]}',
    ], batcher)
    kinds = [kind for kind, *_ in items]
    assert kinds == ["error"] * 5 + ["out", "error", "error"]
    messages = [value for _, _, value in items]
    assert "expected last dimension input_size=3, got shape (2,)" in messages[0]
    assert ("non-built-in classes here are [], got [Mine()]" in messages[1]
            and "This server runs only these criteria of non-built-in classes" in messages[1])
    assert "max_steps" in messages[2]
    assert "streamgen-state/2" in messages[3]
    assert messages[4] == "no open stream with id 'zz'"
    assert "maximum of 2 streams" in messages[6]
    assert "non-finite" in messages[7]
    assert np.array_equal(table.states[session.rows["a"]], saved)
    text = format_items(items)
    assert text.startswith('[{"id":"a","error":"Received an invalid value for argument `x`')


def test_state_moves_between_sessions_and_streams(model, runtime):
    table = StateTable(runtime)
    batcher = Batcher(table)
    one, two = Session(table), Session(table)
    xs = inputs(1, 4, seed=2)[0]
    handle(one, [protocol.step_request("a", xs[0]), protocol.step_request("a", xs[1])], batcher)
    (_, _, state), = handle(one, [protocol.request("a", "get_state")], batcher)
    # Into another connection's stream, and into a local Stream.
    handle(two, [protocol.request("z", "set_state", state)], batcher)
    (_, _, remote), = handle(two, [protocol.step_request("z", xs[2])], batcher)
    local = sg.Stream(model)
    from streamgen.remote import wire
    packed, sizes = wire.load_state(state, runtime.fingerprint, runtime.state_sizes)
    local.set_state(base.unpack_nest(packed, sizes))
    assert_outputs_equal([remote], [local.step(xs[2])])
    # A local Stream's state into a session.
    value = wire.dump_state(local.get_state(), runtime.fingerprint, runtime.state_sizes)
    handle(one, [protocol.request("a", "set_state", value)], batcher)
    (_, _, out), = handle(one, [protocol.step_request("a", xs[3])], batcher)
    assert_outputs_equal([out], [local.step(xs[3])])
    # Close frees the rows.
    one.close()
    two.close()
    assert len(table) == 0


def test_idle_streams_expire_once(runtime):
    clock = [100.0]
    table = StateTable(runtime)
    batcher = Batcher(table)
    session = Session(table, now=lambda: clock[0])
    handle(session, [protocol.step_request("a", np.zeros(3, np.float32))], batcher)
    assert expire_idle(table, 10.0, now=105.0) == 0
    assert expire_idle(table, 10.0, now=111.0) == 1
    assert len(table) == 0 and "a" not in session.rows
    (kind, _, message), = handle(session, [protocol.request("a", "get_state")], batcher)
    assert kind == "error" and "--idle-timeout" in message
    (kind, *_), = handle(session, [protocol.request("a", "get_state")], batcher)
    assert kind == "state"  # re-opened afresh


def test_table_limit_and_reuse(runtime):
    table = StateTable(runtime, max_streams=3, capacity=1)
    rows = [table.allocate(("s", i), *runtime.options()) for i in range(3)]
    assert sorted(rows) == [0, 1, 2]
    with pytest.raises(LimitError, match="maximum of 3 streams"):
        table.allocate(("s", 3), *runtime.options())
    table.release(rows[1])
    assert table.allocate(("s", 4), *runtime.options()) == rows[1]


def test_scatter_skips_rows_closed_meanwhile(runtime):
    table = StateTable(runtime)
    batcher = Batcher(table)
    a = table.allocate(("s", "a"), *runtime.options())
    b = table.allocate(("s", "b"), *runtime.options())
    rows, *arguments = batcher.gather([(a, np.ones(3, np.float32)), (b, np.ones(3, np.float32))])
    result = batcher.step(rows, *arguments)
    table.release(b)
    assert table.allocate(("s", "c"), *runtime.options()) == b  # reused, fresh
    batcher.scatter(rows, result)
    fresh = runtime.initial_state(1, seeds=int(table.seeds[b]))[0]  # zeros at its seed
    assert np.any(table.states[a][:-4] != 0) and np.array_equal(table.states[b], fresh)


def tick_two_submissions(batcher, rows, xs, **options):
    """A `TickLoop(batcher, **options)` given rows 0-2 and 3-5 at once (two
    connections) -> (the stopped loop, the six outputs in row order)."""

    async def main():
        loop = TickLoop(batcher, **options)
        first, second = await asyncio.gather(
            loop.submit([(rows[i], xs[i]) for i in range(3)]),
            loop.submit([(rows[i], xs[i]) for i in range(3, 6)]))
        await loop.stop()
        return loop, first + second

    return asyncio.run(main())


def test_tick_loop_batches_connections(model, runtime):
    table = StateTable(runtime)
    batcher = Batcher(table, max_batch_size=4)
    xs = inputs(6, 1, seed=4)[:, 0]
    rows = [table.allocate(("s", i), *runtime.options()) for i in range(6)]

    ticks, outs = tick_two_submissions(batcher, rows, xs, batch_wait_ms=1.0, tick_rows=4)
    assert ticks.ticks == 2 and ticks.rows_stepped == 6  # 4 + 2 rows
    expected = [sg.Stream(model).step(xs[i]) for i in range(6)]
    assert_outputs_equal(outs, expected)


@pytest.mark.parametrize("max_batch_size, tick_rows, ticks, calls", [
    (1, None, 1, [1] * 6),  # batching off: a call per step, one tick (MIN_TICK_ROWS)
    (1, 4, 2, [1] * 6),
    (4, None, 1, [4, 2]),
])
def test_tick_loop_steps_a_tick_in_calls_of_max_batch_size(model, runtime, max_batch_size,
                                                           tick_rows, ticks, calls):
    table = StateTable(runtime)
    batcher = Batcher(table, max_batch_size=max_batch_size)
    counted = []

    class Counted:  # the runtime, counting the rows of each call
        def __getattr__(self, name):
            return getattr(runtime, name)

        def run(self, x, *arguments, **options):
            counted.append(len(x))
            return runtime.run(x, *arguments, **options)

    batcher.runtime = Counted()
    xs = inputs(6, 1, seed=5)[:, 0]
    rows = [table.allocate(("s", i), *runtime.options()) for i in range(6)]

    loop, outs = tick_two_submissions(batcher, rows, xs, tick_rows=tick_rows)
    assert (loop.ticks, loop.rows_stepped, counted) == (ticks, 6, calls)
    expected = [sg.Stream(model).step(xs[i]) for i in range(6)]
    assert_outputs_equal(outs, expected)


@pytest.mark.parametrize("x, message", [
    ("[true,0,0]", r'expected "x" to be an array of numbers, got \[True, 0, 0\]'),
    ('[0,"1",0]', r'expected "x" to be an array of numbers'),
    ("[[0,0,0]]", r'expected "x" to be an array of numbers'),
    ("[0,0,3.5e38]", r"`x`: it holds a non-finite value \(inf\) at index \(2,\)"),
    ("[0,-1e39,0]", r"`x`: it holds a non-finite value \(-inf\) at index \(1,\)"),
    ("[0,0]", r"`x`, expected last dimension input_size=3, got shape \(2,\)"),
])
def test_step_vectors_outside_the_fast_path_get_the_full_check(runtime, x, message):
    table = StateTable(runtime)
    session = Session(table)
    (kind, _, value), = handle(session, ['{"id":"a","x":%s}' % x], Batcher(table))
    assert kind == "error"
    assert re.search(message, value), value


def test_plain_numbers_take_the_fast_path_and_equal_arrays(model, runtime):
    table = StateTable(runtime)
    session = Session(table)
    rows = [[0, 1, -2], [0.25, 3e38, -1e-45]]  # ints, the float32 edge
    items = handle(session, ['{"id":"%d","x":%s}' % (n, row) for n, row in
                             enumerate(json.dumps(r) for r in rows)], Batcher(table))
    for (kind, _, out), row in zip(items, rows):
        assert kind == "out"
        expected = model.open_stream().step(np.array(row, np.float32))
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_table_counts_sampling_rows_and_their_ticks_draw(model, runtime):
    """`rows.samples` is False only while no row of the table samples; a tick
    with a sampling row draws (equal to `runtime.step`, which tests itself)."""
    table = StateTable(runtime)
    batcher = Batcher(table)
    sample = [{"class_name": "StopSample", "config": {"temperature": 1.0}}]
    x = np.full(3, 0.3, np.float32)
    greedy = table.allocate(("s", "g"), *runtime.options(), seed=5)
    assert table.sampling_rows == 0 and batcher.gather([(greedy, x)])[0].samples is False
    drawn = table.allocate(("s", "d"), *runtime.options(sample), seed=7)
    assert table.sampling_rows == 1 and batcher.gather([(greedy, x)])[0].samples is None
    rows, *arguments = batcher.gather([(greedy, x), (drawn, x)])
    want = runtime.step(*arguments[:2], None, *arguments[2:])
    got = batcher.step(rows, *arguments)
    assert_outputs_equal([got[0][1, :got[1][1]]], [want[0][1, :want[1][1]]])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[2], want[2], atol=1e-6)
    table.configure(drawn, *runtime.options())  # now greedy: the count follows
    assert table.sampling_rows == 0
    table.configure(drawn, *runtime.options(sample))
    table.release(drawn)
    assert table.sampling_rows == 0 and not table.sampling.any()
    lengths = set()  # the drawn row's lengths vary with its draws (it samples)
    row = table.allocate(("s", "e"), *runtime.options(sample), seed=11)
    for _ in range(12):
        lengths.add(len(batcher.run([(row, x)])[0]))
    assert len(lengths) >= 2
