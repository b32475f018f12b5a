"""Streaming == whole-sequence decoding == step by step; state handling."""

import numpy as np
import pytest

import streamgen as sg
from streamgen.runtimes.tf import compiled_functions
from helpers import (CELLS, MODES, assert_outputs_equal, export_litert, make_model,
                     ragged_to_lists)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", MODES)
def test_stream_equals_decode_equals_step(core_models, core_inputs, cell, mode):
    model = core_models[(cell, mode)]
    x = core_inputs  # (4, 12, 3)
    decoded = ragged_to_lists(model.decode(x))
    lengths = [len(out) for row in decoded for out in row]
    assert len(set(lengths)) > 1, "test needs varied lengths to mean anything"

    # B = 1: the generator over one row, and Stream.step one input at a time.
    for b in range(x.shape[0]):
        streamed = list(model.stream(x[b]))
        assert_outputs_equal(streamed, decoded[b])
        s = model.open_stream()
        stepped = [s.step(x[b, t]) for t in range(x.shape[1])]
        assert_outputs_equal(stepped, decoded[b])

    # B > 1: all rows together, each row stopping on its own.
    s = model.open_stream()
    for t in range(x.shape[1]):
        outs = s.step(x[:, t])
        assert isinstance(outs, list) and len(outs) == x.shape[0]
        for b in range(x.shape[0]):
            assert_outputs_equal([outs[b]], [decoded[b][t]])


def test_stream_yields_lazily(core_models):
    model = core_models[("gru", "reset")]
    consumed = []

    def inputs():
        for t in range(3):
            consumed.append(t)
            yield np.full(3, 0.1 * t, np.float32)

    generator = model.stream(inputs())
    first = next(generator)
    assert consumed == [0]  # nothing read ahead
    assert first.ndim == 2 and first.shape[1] == 2
    assert len(list(generator)) == 2 and consumed == [0, 1, 2]


def test_output_types_and_shapes(core_models, core_inputs):
    model = core_models[("lstm", "carry")]
    rt = model.decode(core_inputs)
    assert rt.shape.as_list() == [4, 12, None, 2]
    lengths = rt.row_lengths(axis=2).flat_values.numpy()
    assert lengths.min() >= 0 and lengths.max() <= model.max_steps
    out = model.open_stream().step(core_inputs[0, 0])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32


@pytest.mark.parametrize("mode", MODES)
def test_get_state_set_state_resumes_exactly(core_models, core_inputs, mode):
    model = core_models[("lstm", mode)]
    x = core_inputs[:2]  # (2, 12, 3)
    s = model.open_stream()
    for t in range(5):
        s.step(x[:, t])
    saved = s.get_state()
    assert set(saved) == {"outer", "inner", "random"}  # random: seed and position
    assert [a.shape for a in saved["outer"]] == [(2, 8), (2, 8)]
    uninterrupted = [s.step(x[:, t]) for t in range(5, 12)]

    other = model.open_stream()
    other.step(x[:, 0] * 3.0)  # some unrelated history, then restore
    other.set_state(saved)
    resumed = [other.step(x[:, t]) for t in range(5, 12)]
    for a, b in zip(uninterrupted, resumed):
        for row_a, row_b in zip(a, b):
            np.testing.assert_array_equal(row_a, row_b)


def test_get_state_returns_copies(core_models, core_inputs):
    s = core_models[("gru", "carry")].open_stream()
    s.step(core_inputs[0, 0])
    state = s.get_state()
    state["outer"][0][:] = 123.0
    assert not np.any(s.get_state()["outer"][0] == 123.0)


def test_reset_reproduces_first_outputs(core_models, core_inputs):
    s = core_models[("gru", "carry")].open_stream()
    first = [s.step(x) for x in core_inputs[0]]
    s.reset()
    again = [s.step(x) for x in core_inputs[0]]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # After reset the batch size is free again.
    s.reset()
    assert len(s.step(core_inputs[:3, 0])) == 3


@pytest.mark.parametrize("mode", MODES)
def test_generate_false_skips_model_b(core_models, core_inputs, mode):
    model = core_models[("gru", mode)]
    x = core_inputs[0]
    s = model.open_stream()
    reference = model.open_stream()
    for t in range(4):
        s.step(x[t])
        reference.step(x[t])
    before = s.get_state()
    assert s.step(x[4], generate=False).shape == (0, 2)
    after = s.get_state()
    # model_b did not run: the inner state is untouched; model_a advanced.
    for a, b in zip(before["inner"], after["inner"]):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(before["outer"][0], after["outer"][0])
    # model_a's state is exactly what a decoding step would have left.
    reference.step(x[4])
    np.testing.assert_allclose(after["outer"][0], reference.get_state()["outer"][0], atol=1e-6)


def test_generate_mask_per_row(core_models, core_inputs):
    model = core_models[("gru", "reset")]
    x = core_inputs[:3, 0]
    full = model.open_stream().step(x)
    masked = model.open_stream().step(x, generate=[True, False, True])
    np.testing.assert_allclose(masked[0], full[0], atol=1e-6)
    assert masked[1].shape == (0, 2)
    np.testing.assert_allclose(masked[2], full[2], atol=1e-6)


def test_causality(core_models, core_inputs):
    """Perturbing x[k] changes no Out[i] with i < k."""
    model = core_models[("gru", "carry")]
    x = core_inputs[:1].copy()
    k = 6
    base = ragged_to_lists(model.decode(x))[0]
    x[0, k] += 5.0
    perturbed = ragged_to_lists(model.decode(x))[0]
    assert_outputs_equal(perturbed[:k], base[:k], atol=0)
    changed = any(
        a.shape != b.shape or not np.allclose(a, b)
        for a, b in zip(perturbed[k:], base[k:])
    )
    assert changed, "perturbing x[k] should change some later output"


def test_tracing_is_bounded(core_inputs):
    model = make_model("gru", "carry", seed=3)
    s = model.open_stream()
    rng = np.random.default_rng(0)
    for t in range(1000):
        if t % 100 == 0:
            s.reset()
            batch = int(rng.integers(1, 6))
        s.step(rng.normal(size=(batch, 3)).astype(np.float32))
    # Thresholds change without retracing.
    s2 = model.open_stream(stop=sg.StopHead(0.9))
    for x in core_inputs[0]:
        s2.step(x)
    assert compiled_functions(model).tracing_count() == 1
    for batch, steps in [(1, 5), (3, 7), (2, 11)]:
        model.decode(rng.normal(size=(batch, steps, 3)).astype(np.float32))
    assert compiled_functions(model).tracing_count() == 2


def test_lower_cap_at_inference(core_models, core_inputs):
    model = core_models[("lstm", "reset")]
    full = model.decode(core_inputs).row_lengths(axis=2).flat_values.numpy()
    capped = model.decode(core_inputs, max_steps=3).row_lengths(axis=2).flat_values.numpy()
    np.testing.assert_array_equal(capped, np.minimum(full, 3))
    s = model.open_stream(max_steps=3)
    assert max(len(s.step(x)) for x in core_inputs[0]) <= 3
    with pytest.raises(ValueError, match=r"`max_steps`, expected an integer in \[1, 9\].*got 10"):
        model.open_stream(max_steps=10)


class TestStreamErrors:
    def test_wrong_width(self, core_models):
        s = core_models[("gru", "reset")].open_stream()
        with pytest.raises(ValueError, match=r"expected last dimension input_size=3, got shape \(4,\)"):
            s.step(np.zeros(4))

    def test_wrong_rank(self, core_models):
        s = core_models[("gru", "reset")].open_stream()
        with pytest.raises(ValueError, match=r"expected a 1-D or a 2-D array .* got shape \(1, 1, 3\)"):
            s.step(np.zeros((1, 1, 3)))

    def test_non_finite(self, core_models):
        s = core_models[("gru", "reset")].open_stream()
        with pytest.raises(ValueError, match=r"non-finite value \(nan\) at index \(1,\)"):
            s.step(np.array([0.0, np.nan, 1.0]))
        with pytest.raises(ValueError, match=r"non-finite value \(inf\) at index \(0, 2\)"):
            s.step(np.array([[0.0, 1.0, np.inf]]))

    def test_not_numbers(self, core_models):
        s = core_models[("gru", "reset")].open_stream()
        with pytest.raises(ValueError, match="expected a 1-D or a 2-D array of numbers, got \\['a'"):
            s.step(["a", "b", "c"])

    def test_batch_size_change(self, core_models):
        s = core_models[("gru", "reset")].open_stream()
        s.step(np.zeros((2, 3)))
        with pytest.raises(ValueError, match="batch of 3 rows, but this stream carries state for 2"):
            s.step(np.zeros((3, 3)))

    def test_set_state_wrong_nest(self, core_models):
        s = core_models[("lstm", "reset")].open_stream()
        with pytest.raises(ValueError, match=r"expected a dict with keys \['inner', 'outer'\]"):
            s.set_state([np.zeros((1, 8))])
        state = s.get_state()
        state["outer"] = state["outer"][:1]
        with pytest.raises(ValueError, match=r"state\['outer'\] must be a list of 2 arrays"):
            s.set_state(state)
        state = s.get_state()
        state["inner"][1] = np.zeros((1, 7))
        with pytest.raises(ValueError, match=r"state\['inner'\]\[1\] must have shape \(1, 8\), got \(1, 7\)"):
            s.set_state(state)


# ---------------------------------------------------------------------- #
# State and step arguments: a ValueError naming the argument, in Stream and
# LiteStream alike.
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def both_streams(core_models, tmp_path_factory):
    """`open() -> stream` for a `Stream` and a `LiteStream` of the same model."""
    pytest.importorskip("ai_edge_litert")
    model = core_models[("gru", "reset")]
    path = str(tmp_path_factory.mktemp("both") / "m.tflite")
    export_litert(model, path)
    return {"tf": model.open_stream, "lite": lambda: sg.LiteStream(path)}


BAD_STATES = [
    ({"outer": [np.full((1, 8), np.nan)], "inner": [np.zeros((1, 8))]},
     r"`state`: it holds a non-finite value \(nan\) at index \(0, 0\)"),
    ({"outer": [np.full((1, 8), np.inf)], "inner": [np.zeros((1, 8))]},
     r"`state`: it holds a non-finite value \(inf\)"),
    ({"outer": [np.full((1, 8), 1e300)], "inner": [np.zeros((1, 8))]},
     r"`state`: it holds a non-finite value \(inf\)"),  # beyond float32
    ({"outer": [[["a"] * 8]], "inner": [np.zeros((1, 8))]},
     r"`state`, expected state\['outer'\]\[0\] to be an array of numbers, got \[\['a'"),
    ({"outer": [np.zeros((0, 8))], "inner": [np.zeros((0, 8))]},
     r"`state`, expected at least one row"),
]


@pytest.mark.parametrize("kind", ["tf", "lite"])
@pytest.mark.parametrize("state, message", BAD_STATES)
def test_set_state_refuses_bad_values(both_streams, kind, state, message):
    stream = both_streams[kind]()
    first = stream.step(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=message):
        stream.set_state(state)
    assert stream.batch_size == 1  # the state it had is kept
    stream.reset()
    np.testing.assert_allclose(stream.step(np.ones(3, np.float32)), first, atol=1e-6)


@pytest.mark.parametrize("kind", ["tf", "lite"])
@pytest.mark.parametrize("x, generate, message", [
    (np.ones(3), None, r"`generate`, expected a bool or a bool array, got None"),
    (np.ones(3), "False", r"`generate`, expected a bool or a bool array of shape \(1,\), got 'False'"),
    (np.ones((2, 3)), [True, False, True], r"`generate`, expected a bool or a bool array of "
                                           r"shape \(2,\), got \[True, False, True\]"),
    (np.ones((2, 3)), [1, 0], r"`generate`, expected a bool or a bool array of shape \(2,\)"),
    (np.zeros((0, 3)), True, r"`x`, expected at least one row, got an array of 0 rows"),
    ([1.0, 2.0], True, r"`x`, expected last dimension input_size=3, got shape \(2,\)"),
])
def test_step_arguments_are_checked(both_streams, kind, x, generate, message):
    stream = both_streams[kind]()
    with pytest.raises(ValueError, match=message):
        stream.step(x, generate=generate)
    assert stream.batch_size is None  # a bad first step does not fix the batch size
    assert len(stream.step(np.ones((4, 3)))) == 4


def test_decode_of_empty_sequences_is_empty(core_models):
    model = core_models[("gru", "reset")]
    for shape in [(1, 0, 3), (0, 5, 3), (0, 0, 3)]:
        rt = model.decode(np.zeros(shape, np.float32))
        assert rt.shape[:2] == shape[:2] and rt.shape[-1] == 2
        assert rt.flat_values.shape == (0, 2)
