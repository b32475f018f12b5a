"""Any built-in stop criteria per row: one compiled step for every mix.

Every runtime (TensorFlow and LiteRT) is compiled with `StopHead`,
`L2Norm` above and `L2Norm` below at once; each row's thresholds switch
each kind on or off (`streamgen.criteria`). Rows with any mix of them,
`[]` included, share one call and one trace and equal each stream alone.
"""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamgen as sg
from helpers import export_litert, make_model
from streamgen import criteria
from streamgen.runtimes.tf import compiled_functions

pytest.importorskip("ai_edge_litert")

# Mixes of built-in criteria (None: the model's default, StopHead(0.5)).
MIXES = [
    None,
    [],
    [sg.StopHead(0.2)],
    [sg.L2Norm(0.5)],
    [sg.L2Norm(0.3, "below")],
    [sg.StopHead(0.8), sg.L2Norm(0.6)],
    [sg.L2Norm(0.7), sg.L2Norm(0.25, "below")],
    [sg.StopHead(0.6), sg.L2Norm(0.9), sg.L2Norm(0.2, "below"), sg.L2Norm(0.5)],
]


@pytest.fixture(scope="module")
def model():
    return make_model("gru", "carry", seed=7, stop_scale=8.0)


@pytest.fixture(scope="module")
def runtimes(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stop_kinds") / "m.tflite")
    export_litert(model, path)
    return {"tf": sg.open_runtime(model), "lite": sg.open_runtime(path), "path": path}


def alone(model, runtimes, kind, stop, max_steps=None):
    if kind == "tf":
        return model.open_stream(stop=stop, max_steps=max_steps, seed=0)
    return sg.LiteStream(runtimes["path"], stop=stop, max_steps=max_steps, seed=0)


def test_mixes_give_different_lengths(model):
    x = np.random.default_rng(0).uniform(-1, 1, size=(24, 3)).astype(np.float32)
    totals = {repr(stop): sum(len(o) for o in model.open_stream(stop=stop).step(x))
              for stop in MIXES}
    assert len(set(totals.values())) >= 6, totals  # the mixes really differ


@pytest.mark.parametrize("kind", ["tf", "lite"])
@settings(max_examples=6)
@given(mixes=st.lists(st.integers(0, len(MIXES) - 1), min_size=1, max_size=6),
       caps=st.lists(st.sampled_from([None, 1, 4, 9]), min_size=6, max_size=6),
       seed=st.integers(0, 2 ** 16))
def test_random_subsets_with_random_mixes_equal_streams_alone(model, runtimes, kind, mixes,
                                                              caps, seed):
    runtime = runtimes[kind]
    rng = np.random.default_rng(seed)
    count, steps = len(mixes), 5
    settings_ = [(MIXES[m], caps[n]) for n, m in enumerate(mixes)]
    inputs = rng.uniform(-1, 1, size=(count, steps, 3)).astype(np.float32)
    rows = [runtime.options(stop, cap) for stop, cap in settings_]
    thresholds = np.stack([r[0] for r in rows])  # (count, 3)
    limits = np.array([r[1] for r in rows], np.int32)
    table = runtime.initial_state(count)
    done = np.zeros(count, int)
    got = [[] for _ in range(count)]
    while done.min() < steps:
        ready = np.array([n for n in rng.permutation(count)
                          if done[n] < steps and rng.random() < 0.6], int)
        if not len(ready):
            continue
        frames, lengths, table[ready] = runtime.step(
            inputs[ready, done[ready]], table[ready], thresholds=thresholds[ready],
            caps=limits[ready])
        for row, n in enumerate(ready):
            got[n].append(frames[row, :lengths[row]])
        done[ready] += 1
    for n, (stop, cap) in enumerate(settings_):
        stream = alone(model, runtimes, kind, stop, cap)
        for t in range(steps):
            expected = stream.step(inputs[n, t])
            assert got[n][t].shape == expected.shape, f"stream {n} ({stop!r}), step {t}"
            np.testing.assert_allclose(got[n][t], expected, atol=1e-5)
        np.testing.assert_allclose(table[n], runtime.pack(stream.get_state())[0], atol=1e-5)


def test_tf_and_lite_agree_row_by_row_for_any_mix(runtimes):
    rng = np.random.default_rng(3)
    rows = 61
    x = rng.uniform(-1, 1, size=(rows, 3)).astype(np.float32)
    state = rng.normal(size=(rows, runtimes["tf"].state_size)).astype(np.float32) * 0.5
    decode = rng.random(rows) < 0.9
    options = [runtimes["tf"].options(MIXES[rng.integers(len(MIXES))],
                                      int(rng.integers(1, 10))) for _ in range(rows)]
    thresholds = np.stack([o[0] for o in options])
    caps = np.array([o[1] for o in options], np.int32)
    a = runtimes["tf"].step(x, state, decode, thresholds, caps)
    b = runtimes["lite"].step(x, state, decode, thresholds, caps)
    assert a[1].tolist() == b[1].tolist()
    assert len(set(a[1].tolist())) >= 4
    for left, right in zip(a[::2], b[::2]):
        np.testing.assert_allclose(left, right, atol=1e-5)


def test_one_trace_for_every_mix():
    model = make_model("lstm", "reset", seed=9)  # fresh: nothing traced yet
    x = np.random.default_rng(1).uniform(-1, 1, size=(5, 3)).astype(np.float32)
    for stop in MIXES:
        model.open_stream(stop=stop).step(x)
        model.open_stream(stop=stop, max_steps=3).step(x[:2])
    runtime = sg.open_runtime(model, stop=[])
    thresholds = np.stack([runtime.options(stop)[0] for stop in MIXES])  # (8, 3)
    runtime.step(np.zeros((8, 3)), runtime.initial_state(8), thresholds=thresholds)
    assert compiled_functions(model).tracing_count() == 1


def test_the_row_form():
    row = criteria.thresholds_row
    np.testing.assert_array_equal(row([], []), [np.inf, np.inf, -np.inf, np.inf])
    np.testing.assert_array_equal(
        row([{"class_name": "L2Norm", "config": {"threshold": 2.0, "mode": "below"}},
             sg.StopHead(0.25)], []), [0.25, np.inf, 2.0, np.inf])
    # StopSample's column holds its temperature (the flattest of several).
    np.testing.assert_array_equal(
        row([sg.StopSample(0.5), sg.StopHead(0.25), sg.StopSample(2.0)], []),
        [0.25, np.inf, -np.inf, 2.0])
    assert row([sg.StopHead(0.25)], []).dtype == np.float32


class FirstAbove(sg.StopCriterion):
    """A criterion of the user's own class: `frame[0] > threshold`."""

    def fires(self, frame, stop_logit, threshold):
        return frame[:, 0] > threshold


def test_criteria_of_the_users_classes_stay_fixed_per_runtime(model, runtimes, tmp_path):
    mine = [FirstAbove(0.1), sg.StopHead(0.5)]
    runtime = sg.open_runtime(model, stop=mine)
    assert runtime.custom_criteria == [{"class_name": "FirstAbove", "config": {"threshold": 0.1}}]
    assert runtime.thresholds.tolist() == [0.5, np.inf, -np.inf, np.inf, np.float32(0.1)]
    # Its thresholds and the built-in criteria beside it vary per row...
    for stop in ([FirstAbove(-0.2)], [FirstAbove(0.3), sg.L2Norm(0.5, "below")]):
        thresholds, cap = runtime.options(stop)
        x = np.random.default_rng(2).uniform(-1, 1, size=(6, 3)).astype(np.float32)
        frames, lengths, _ = runtime.step(x, runtime.initial_state(6),
                                          thresholds=np.tile(thresholds, (6, 1)))
        expected = model.open_stream(stop=stop).step(x)
        assert lengths.tolist() == [len(e) for e in expected]
    # ...its kind does not: it has no threshold known never to fire.
    for stop in ([], [sg.StopHead(0.5)], [sg.StopHead(0.5), FirstAbove(0.1), FirstAbove(0.2)]):
        with pytest.raises(ValueError, match=r"non-built-in classes here are "
                                             r"\[FirstAbove\(\)\], got .*Open another runtime"):
            runtime.options(stop)
    with pytest.raises(ValueError, match=r"non-built-in classes here are \[\], "
                                         r"got \[FirstAbove\(\)\]"):
        runtimes["lite"].options([FirstAbove(0.1)])


def test_a_user_criterion_on_the_same_model_compiles_its_own_step():
    model = make_model("gru", "reset", seed=10)
    x = np.zeros((2, 3), np.float32)
    model.open_stream().step(x)
    model.open_stream(stop=[sg.L2Norm(0.5)]).step(x)
    assert compiled_functions(model).tracing_count() == 1
    model.open_stream(stop=[FirstAbove(0.0)]).step(x)
    assert compiled_functions(model).tracing_count() == 2


def test_cli_tflite_takes_another_built_in_kind(cli_model_path, cli_tflite):
    from click.testing import CliRunner

    from streamgen.cli.main import cli

    results = {}
    for model in (cli_model_path, cli_tflite):
        result = CliRunner().invoke(cli, ["stream", "--model", model, "--stop", "l2-above",
                                          "--threshold", "0.5"], input="[0, 0, 1]\n[1, 0, 0]\n")
        assert result.exit_code == 0, result.output
        results[model] = [json.loads(line) for line in result.stdout.splitlines()]
    keras_out, lite_out = results[cli_model_path], results[cli_tflite]
    assert len(keras_out) == len(lite_out) == 2
    for a, b in zip(keras_out, lite_out):
        assert np.shape(a) == np.shape(b)
        np.testing.assert_allclose(np.reshape(a, (-1, 2)), np.reshape(b, (-1, 2)), atol=1e-5)
