"""The stateless runtime step: subsets of rows, per-row options, errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamgen as sg
from helpers import export_litert, make_model
from streamgen.runtimes.tf import compiled_functions

pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def model():
    # Two criteria, so that per-row thresholds of both kinds are exercised.
    return make_model("gru", "carry", seed=5, stop=[sg.StopHead(0.5), sg.L2Norm(6.0)])


@pytest.fixture(scope="module")
def runtimes(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("runtime") / "m.tflite")
    export_litert(model, path)
    return {"tf": sg.open_runtime(model), "lite": sg.open_runtime(path), "path": path}


# Six streams, each with its own thresholds and cap.
STREAM_OPTIONS = [
    (None, None),
    ([sg.StopHead(0.1), sg.L2Norm(6.0)], None),
    ([sg.StopHead(0.9), sg.L2Norm(6.0)], 4),
    ([sg.StopHead(0.5), sg.L2Norm(0.3)], None),
    ([sg.StopHead(1.0), sg.L2Norm(float("inf"))], 7),
    (None, 1),
]


def reference_stream(model, runtimes, kind, stop, max_steps):
    if kind == "tf":
        return model.open_stream(stop=stop, max_steps=max_steps, seed=0)
    return sg.LiteStream(runtimes["path"], stop=stop, max_steps=max_steps, seed=0)


@pytest.mark.parametrize("kind", ["tf", "lite"])
def test_random_subsets_on_a_shared_table_equal_streams_alone(model, runtimes, kind):
    runtime = runtimes[kind]
    rng = np.random.default_rng(11)
    count, steps = len(STREAM_OPTIONS), 8
    inputs = rng.normal(size=(count, steps, 3)).astype(np.float32)
    rows = [runtime.options(stop, max_steps) for stop, max_steps in STREAM_OPTIONS]
    thresholds = np.stack([r[0] for r in rows])  # (6, 2)
    caps = np.array([r[1] for r in rows], np.int32)  # (6,)
    table = runtime.initial_state(count)  # (6, S)
    done = np.zeros(count, int)  # inputs consumed per stream
    got = [[] for _ in range(count)]
    while done.min() < steps:
        # Any subset of the streams that still have input, in any order.
        ready = [n for n in rng.permutation(count) if done[n] < steps
                 and rng.random() < 0.6]
        if not ready:
            continue
        ready = np.array(ready)
        x = inputs[ready, done[ready]]  # (R, 3)
        frames, lengths, table[ready] = runtime.step(
            x, table[ready], thresholds=thresholds[ready], caps=caps[ready])
        for row, n in enumerate(ready):
            got[n].append(frames[row, :lengths[row]])
        done[ready] += 1

    all_lengths = set()
    for n, (stop, max_steps) in enumerate(STREAM_OPTIONS):
        alone = reference_stream(model, runtimes, kind, stop, max_steps)
        for t in range(steps):
            expected = alone.step(inputs[n, t])
            assert got[n][t].shape == expected.shape, f"stream {n}, step {t}"
            np.testing.assert_allclose(got[n][t], expected, atol=1e-5)
            all_lengths.add(len(expected))
        np.testing.assert_allclose(table[n], runtime.pack(alone.get_state())[0], atol=1e-5)
    assert len(all_lengths) >= 4  # the options really differ


def test_tf_and_lite_runtimes_agree_row_by_row(runtimes):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(37, 3)).astype(np.float32)
    state = rng.normal(size=(37, runtimes["tf"].state_size)).astype(np.float32) * 0.5
    decode = rng.random(37) < 0.8
    a = runtimes["tf"].step(x, state, decode)
    b = runtimes["lite"].step(x, state, decode)
    assert a[1].tolist() == b[1].tolist()
    assert not a[1][~decode].any()
    for left, right in zip(a[::2], b[::2]):
        np.testing.assert_allclose(left, right, atol=1e-5)


def test_lite_buckets_and_chunks(runtimes):
    lite = sg.open_runtime(runtimes["path"])  # fresh: no bucket used yet
    rng = np.random.default_rng(4)
    for rows in (1, 3, 4, 5, 17, 3):
        x = rng.normal(size=(rows, 3)).astype(np.float32)
        frames, lengths, state = lite.step(x, lite.initial_state(rows))
        assert frames.shape == (rows, 9, 2) and lengths.shape == (rows,)
        assert state.shape == (rows, lite.state_size)
    # one interpreter per bucket, of the greedy step (no row samples); the
    # full step's only for 1 row (made when the file opened, as a check)
    assert sorted(lite._greedy_buckets) == [1, 4, 8, 32] and sorted(lite._buckets) == [1]
    # Above the largest bucket: chunks, the same results as the TF step.
    rows = 1024 + 37
    x = rng.normal(size=(rows, 3)).astype(np.float32)
    state = rng.normal(size=(rows, lite.state_size)).astype(np.float32) * 0.5
    got = lite.step(x, state)
    expected = runtimes["tf"].step(x, state)
    assert got[1].tolist() == expected[1].tolist()
    np.testing.assert_allclose(got[2], expected[2], atol=1e-5)


def test_no_retracing_for_new_batch_sizes_or_options(model, runtimes):
    tf_runtime = runtimes["tf"]
    rng = np.random.default_rng(5)
    tf_runtime.step(np.zeros((1, 3), np.float32), tf_runtime.initial_state(1))
    before = compiled_functions(model).tracing_count()
    for rows in (1, 2, 7, 64, 3):
        thresholds = np.tile(tf_runtime.thresholds, (rows, 1)) * rng.random((rows, 1))
        tf_runtime.step(rng.normal(size=(rows, 3)), tf_runtime.initial_state(rows),
                        thresholds=thresholds, caps=rng.integers(0, 10, rows))
    assert compiled_functions(model).tracing_count() == before


def test_empty_batch_gives_empty_results(runtimes):
    for kind in ("tf", "lite"):
        runtime = runtimes[kind]
        frames, lengths, state = runtime.step(np.zeros((0, 3)), runtime.initial_state(0))
        assert (frames.shape, lengths.shape, state.shape) == (
            (0, 9, 2), (0,), (0, runtime.state_size))


def test_pack_unpack_round_trip(model, runtimes):
    stream = model.open_stream()
    rng = np.random.default_rng(6)
    stream.step(rng.normal(size=(3, 3)).astype(np.float32))
    nest = stream.get_state()
    for kind in ("tf", "lite"):
        runtime = runtimes[kind]
        packed = runtime.pack(nest)
        assert packed.shape == (3, runtime.state_size) and packed.dtype == np.float32
        back = runtime.unpack(packed)
        assert [a.shape for a in back["outer"] + back["inner"]] == [
            a.shape for a in nest["outer"] + nest["inner"]]
        for a, b in zip(back["outer"] + back["inner"], nest["outer"] + nest["inner"]):
            np.testing.assert_array_equal(a, b)


def test_fingerprint_is_shared_by_the_model_its_copy_and_its_export(model, runtimes, tmp_path):
    path = tmp_path / "copy.keras"
    model.save(path)
    copy = sg.open_runtime(str(path))
    assert runtimes["tf"].fingerprint == runtimes["lite"].fingerprint == copy.fingerprint
    other = make_model("gru", "carry", seed=6, stop=[sg.StopHead(0.5), sg.L2Norm(6.0)])
    assert sg.open_runtime(other).fingerprint != copy.fingerprint


def test_options(runtimes):
    for kind in ("tf", "lite"):
        runtime = runtimes[kind]
        thresholds, cap = runtime.options()
        # Columns: StopHead, L2Norm above, L2Norm below, StopSample; a kind not used is off.
        assert thresholds.tolist() == [0.5, 6.0, -np.inf, np.inf] and cap == 9
        thresholds, cap = runtime.options(
            [{"class_name": "StopHead", "config": {"threshold": 0.25}}, sg.L2Norm(2.0)], 3)
        assert thresholds.tolist() == [0.25, 2.0, -np.inf, np.inf] and cap == 3
        # Any mix of built-in criteria, [] included, per row.
        np.testing.assert_array_equal(runtime.options([sg.StopHead(0.2)])[0],
                                      np.float32([0.2, np.inf, -np.inf, np.inf]))
        assert runtime.options([])[0].tolist() == [np.inf, np.inf, -np.inf, np.inf]
        assert runtime.options([sg.L2Norm(1.5, "below"), sg.L2Norm(0.5, "below"),
                                sg.L2Norm(4.0), sg.L2Norm(3.0)])[0].tolist() == [
            np.inf, 3.0, 1.5, np.inf]  # one threshold per kind: fires when any would
        with pytest.raises(ValueError, match=r"`threshold` of StopHead, expected a "
                                             r"probability in \[0, 1\], got 2"):
            runtime.options([{"class_name": "StopHead", "config": {"threshold": 2}},
                             sg.L2Norm(1.0)])
        with pytest.raises(ValueError, match=r"`max_steps`, expected an integer in \[1, 9\]"):
            runtime.options(None, 10)


@pytest.mark.parametrize("kind", ["tf", "lite"])
@pytest.mark.parametrize("arguments, message", [
    (dict(x=np.zeros((2, 4))), r"`x`, expected last dimension input_size=3"),
    (dict(x=[["a", "b", "c"]]), r"`x`, expected a 2-D array of numbers"),
    (dict(x=np.full((2, 3), np.inf)), r"`x`: it holds a non-finite value"),
    (dict(state=np.zeros((2, 5))), r"`state`, expected a float array of shape \(2, "),
    (dict(state=np.full((2, 20), np.nan)), r"`state`: it holds a non-finite value"),
    (dict(generate="False"), r"`generate`, expected a bool or a bool array of shape \(2,\)"),
    (dict(generate=[True]), r"`generate`, expected a bool or a bool array of shape \(2,\)"),
    (dict(thresholds=np.zeros((2, 2))), r"`thresholds`, expected a float array of shape \(2, 4\)"),
    (dict(thresholds=np.full((2, 4), np.nan)), r"`thresholds`, expected .* without NaN"),
    (dict(caps=[3, 10]), r"`caps`, expected an int array of shape \(2,\) with values in \[0, 9\]"),
    (dict(caps=[3.0, 1.0]), r"`caps`, expected an int array"),
])
def test_step_argument_errors_name_the_argument(runtimes, kind, arguments, message):
    runtime = runtimes[kind]
    call = dict(x=np.zeros((2, 3)), state=runtime.initial_state(2), **{})
    call.update(arguments)
    with pytest.raises(ValueError, match=message):
        runtime.step(**call)


def test_model_facts_are_the_runtimes_without_opening_one(model, runtimes, tmp_path):
    """`runtimes.model_facts` reads a `.keras` file's config (no model built)
    and a `.tflite` file's metadata: the same facts as the open runtime."""
    from streamgen.runtimes import model_facts

    path = str(tmp_path / "m.keras")
    model.save(path)
    keys = ("input_size", "output_size", "max_steps", "frame_loss", "stop")
    described = sg.open_runtime(path).describe()
    expected = {key: described[key] for key in keys}
    assert expected["stop"] == [{"class_name": "StopHead", "config": {"threshold": 0.5}},
                                {"class_name": "L2Norm",
                                 "config": {"threshold": 6.0, "mode": "above"}}]
    assert model_facts(path) == expected
    assert model_facts(runtimes["path"]) == expected
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(sg.NotAKerasModelError, match="junk.keras: not a .keras model"):
        model_facts(str(junk))


def test_open_runtime_typed_errors(tmp_path, runtimes):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(sg.NotAnExportError, match="junk.tflite: not a streamgen LiteRT export"):
        sg.open_runtime(str(junk))
    keras_junk = tmp_path / "junk.keras"
    keras_junk.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(sg.NotAKerasModelError, match="junk.keras: not a .keras model"):
        sg.open_runtime(str(keras_junk))
    other = tmp_path / "model.onnx"
    other.write_bytes(b"x")
    with pytest.raises(sg.ModelFileError, match="expected a .keras model or a .tflite export"):
        sg.open_runtime(str(other))
    with pytest.raises(sg.ModelFileError, match="a folder, not a model file"):
        sg.open_runtime(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        sg.open_runtime(str(tmp_path / "missing.tflite"))
    # Each typed error is a ValueError, for callers that catch those.
    assert issubclass(sg.NotAnExportError, ValueError)


@given(rows=st.integers(1, 6), cap=st.integers(0, 9), seed=st.integers(0, 10_000))
def test_lengths_stay_within_each_rows_cap(runtimes, rows, cap, seed):
    rng = np.random.default_rng(seed)
    runtime = runtimes["lite"]
    caps = rng.integers(0, cap + 1, rows)
    thresholds = np.stack([runtime.thresholds] * rows) * rng.random((rows, 1))
    frames, lengths, _ = runtime.step(rng.normal(size=(rows, 3)), runtime.initial_state(rows),
                                      thresholds=thresholds, caps=caps)
    assert np.all((0 <= lengths) & (lengths <= caps))
    emitted = np.arange(9)[None, :] < lengths[:, None]
    assert not frames[~emitted].any()  # zero past each row's length


# The mixes of the loop-structure test: every built-in kind, alone and
# together, `[]`, and `StopSample` (which the greedy step leaves out).
LOOP_MIXES = [[sg.StopHead(0.5)], [sg.L2Norm(1.0), sg.StopHead(0.9)], [sg.L2Norm(0.5, "below")],
              [], [sg.StopSample(1.0)], [sg.StopSample(0.5), sg.L2Norm(2.0)]]


@pytest.mark.parametrize("kind", ["mse", "categorical", "mdn"])
def test_the_unrolled_step_equals_the_while_loop_step(sampling_models, kind):
    """The TensorFlow step runs its inner steps unrolled up to
    `UNROLL_MAX_STEPS` and in a `tf.while_loop` above; both structures of
    the same step, greedy and sampling, give the same outputs over a stream
    of steps: lengths equal, frames and states to 1e-6, with per-row mixes
    of every built-in kind, caps from 0 to `max_steps`, rows that do not
    generate, and greedy and sampled rows side by side."""
    import tensorflow as tf

    from streamgen.runtimes import base
    from streamgen.runtimes import tf as tf_runtime

    model = sampling_models[kind]
    runtime = sg.open_runtime(model)
    rows, steps = 12, 8
    rng = np.random.default_rng(11)
    x = rng.normal(size=(steps, rows, 3)).astype(np.float32)
    options = [runtime.options(LOOP_MIXES[b % len(LOOP_MIXES)], max_steps=None if b % 4 else
                               1 + b % model.max_steps) for b in range(rows)]
    thresholds = tf.constant(np.stack([o[0] for o in options]))
    caps = np.array([o[1] for o in options], np.int32)
    caps[5] = 0  # no inner step runs
    samplers_ = ["greedy"] if kind == "mse" else ["greedy", "random", sg.samplers.TopK(2)]
    params = tf.constant(np.stack([runtime.sampler_params(samplers_[b % len(samplers_)])
                                   for b in range(rows)]))
    signature = tf_runtime.step_signature(model, thresholds.shape[1], sampling=True)
    functions = {}
    for unrolled in (True, False):
        def step(*inputs, unrolled=unrolled):
            return tf_runtime.sampling_step(model, (), *inputs, unrolled=unrolled)

        def greedy(*inputs, unrolled=unrolled):
            return tf_runtime.packed_step(model, (), *inputs, unrolled=unrolled)

        functions[unrolled] = (tf.function(greedy, input_signature=signature[:5]),
                               tf.function(step, input_signature=signature))
    states = {unrolled: runtime.initial_state(rows, seeds=3) for unrolled in functions}
    lengths = []
    for t in range(steps):
        generate = tf.constant(rng.random(rows) > 0.2)
        results = {}
        for unrolled, (greedy, step) in functions.items():
            state = tf.constant(states[unrolled])
            uniforms = tf.constant(base.state_uniforms(
                states[unrolled], model.max_steps, runtime.draws_per_step))
            inputs = (tf.constant(x[t]), state, generate, thresholds, tf.constant(caps))
            results[unrolled] = ([v.numpy() for v in greedy(*inputs)],
                                 [v.numpy() for v in step(*inputs, params, uniforms)])
            states[unrolled] = results[unrolled][1][2]
        for unrolled_result, loop_result in zip(results[True], results[False]):
            np.testing.assert_array_equal(unrolled_result[1], loop_result[1])  # lengths
            np.testing.assert_allclose(unrolled_result[0], loop_result[0], atol=1e-6)  # frames
            np.testing.assert_allclose(unrolled_result[2], loop_result[2], atol=1e-6)  # state
        lengths += results[True][1][1].tolist()
        assert results[True][1][1][5] == 0 and not results[True][1][0][5].any()
    assert len(set(lengths)) >= 4, lengths  # the stop tests decided


def test_the_graph_call_equals_the_concrete_function_and_reads_the_weights_each_call():
    """`TFRuntime` runs its step's graph as one op (`GraphCall`): the same
    outputs as calling the concrete function, bit for bit, and weights
    changed after the runtime was made are used by its next call."""
    import tensorflow as tf

    from streamgen.runtimes.tf import GraphCall

    model = make_model("lstm", "reset", seed=12)
    runtime = sg.open_runtime(model)
    assert isinstance(runtime._step, GraphCall)
    assert not isinstance(sg.open_runtime(model, jit_compile=True)._step, GraphCall)
    rng = np.random.default_rng(2)
    x, state = rng.normal(size=(3, 3)).astype(np.float32), runtime.initial_state(3)
    frames, lengths, new_state = runtime.step(x, state)
    inputs = [tf.constant(v) for v in (x, state, np.ones(3, bool),
                                       np.tile(runtime.thresholds, (3, 1)),
                                       np.full(3, model.max_steps, np.int32))]
    for got, want in zip((frames, lengths, new_state), runtime._step.concrete(*inputs)):
        np.testing.assert_array_equal(got, want.numpy())
    kernel, bias = model.frame_head.get_weights()
    model.frame_head.set_weights([kernel * 2.0, bias + 0.5])
    changed = runtime.step(x, state)
    assert not np.allclose(changed[0], frames)
    for got, want in zip(changed, runtime._step.concrete(*inputs)):
        np.testing.assert_array_equal(got, want.numpy())
