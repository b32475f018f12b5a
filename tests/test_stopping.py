"""Stop criteria, the cap, forced lengths, and gradients."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import streamgen as sg
from helpers import MODES, make_model


def lengths_of(rt):
    """`(B, T, None, O)` ragged -> int array `(B, T)`."""
    return rt.row_lengths(axis=2).to_tensor().numpy()


def test_l2_threshold_zero_gives_only_empty_outputs(core_models, core_inputs):
    model = core_models[("gru", "carry")]
    rt = model.decode(core_inputs, stop=sg.L2Norm(0.0, mode="above"))
    np.testing.assert_array_equal(lengths_of(rt), np.zeros((4, 12)))
    s = model.open_stream(stop=sg.L2Norm(0.0))
    assert all(s.step(x).shape == (0, 2) for x in core_inputs[0])


def test_infinite_threshold_runs_to_the_cap(core_models, core_inputs):
    model = core_models[("lstm", "reset")]
    rt = model.decode(core_inputs, stop=sg.L2Norm(math.inf))
    np.testing.assert_array_equal(lengths_of(rt), np.full((4, 12), 9))
    rt = model.decode(core_inputs, stop=[])  # the cap alone
    np.testing.assert_array_equal(lengths_of(rt), np.full((4, 12), 9))


def test_l2_norm_semantics(core_models, core_inputs):
    """The STOP step is the first whose frame norm crosses the threshold."""
    model = core_models[("gru", "reset")]
    full = model.decode(core_inputs, stop=[]).to_list()  # every frame up to the cap
    for mode, threshold in [("above", 0.3), ("below", 0.2)]:
        got = lengths_of(model.decode(core_inputs, stop=sg.L2Norm(threshold, mode)))
        for b, row in enumerate(full):
            for t, frames in enumerate(row):
                norms = np.linalg.norm(np.asarray(frames), axis=-1)
                fired = norms > threshold if mode == "above" else norms < threshold
                expected = int(np.argmax(fired)) if fired.any() else 9
                assert got[b, t] == expected


def test_any_of_criteria_is_the_minimum(core_models, core_inputs):
    model = core_models[("simple_rnn", "carry")]
    head = lengths_of(model.decode(core_inputs[:, :1], stop=sg.StopHead(0.5)))
    norm = lengths_of(model.decode(core_inputs[:, :1], stop=sg.L2Norm(0.3)))
    both = lengths_of(model.decode(core_inputs[:, :1], stop=[sg.StopHead(0.5), sg.L2Norm(0.3)]))
    # At the first outer step both start from the same state, so "any of"
    # ends at whichever fires first.
    np.testing.assert_array_equal(both, np.minimum(head, norm))


def test_stop_head_threshold_changes_without_retraining(core_inputs):
    model = make_model("gru", "reset", seed=5, stop_scale=1.0)
    low = lengths_of(model.decode(core_inputs, stop=sg.StopHead(0.01)))
    high = lengths_of(model.decode(core_inputs, stop=sg.StopHead(0.99)))
    never = lengths_of(model.decode(core_inputs, stop=sg.StopHead(1.0)))
    assert low.sum() < high.sum()
    np.testing.assert_array_equal(never, np.full((4, 12), 9))


@pytest.mark.parametrize("mode", MODES)
def test_forced_lengths_are_exact(core_models, core_inputs, mode):
    model = core_models[("lstm", mode)]
    lengths = np.random.default_rng(1).integers(0, 10, size=(4, 12))
    rt = model.decode(core_inputs, lengths=lengths)
    np.testing.assert_array_equal(lengths_of(rt), lengths)


@given(
    threshold=st.floats(0.0, 1.0),
    norm=st.one_of(st.floats(0.0, 10.0), st.just(math.inf)),
    mode=st.sampled_from(["above", "below"]),
    cap=st.integers(1, 9),
)
def test_lengths_always_within_cap(core_models, core_inputs, threshold, norm, mode, cap):
    model = core_models[("gru", "carry")]
    stop = [sg.StopHead(threshold), sg.L2Norm(norm, mode)]
    lengths = lengths_of(model.decode(core_inputs[:2, :6], stop=stop, max_steps=cap))
    assert lengths.min() >= 0 and lengths.max() <= cap


@given(lengths=st.lists(st.integers(0, 9), min_size=6, max_size=6))
def test_forced_lengths_property(core_models, core_inputs, lengths):
    model = core_models[("gru", "carry")]
    forced = np.array([lengths], np.int32)
    np.testing.assert_array_equal(lengths_of(model.decode(core_inputs[:1, :6], lengths=forced)), forced)


class TestStopErrors:
    def test_lengths_out_of_range(self, core_models, core_inputs):
        model = core_models[("gru", "reset")]
        bad = np.full((4, 12), 10)
        with pytest.raises(ValueError, match=r"`lengths`, expected values in \[0, max_steps=9\], got min 10 and max 10"):
            model.decode(core_inputs, lengths=bad)
        with pytest.raises(ValueError, match=r"`lengths`, expected an integer array of shape \(4, 12\), got int64 \(4, 11\)"):
            model.decode(core_inputs, lengths=bad[:, :11])

    def test_thresholds(self):
        with pytest.raises(ValueError, match=r"`threshold` of StopHead, expected a probability in \[0, 1\], got 1.5"):
            sg.StopHead(1.5)
        with pytest.raises(ValueError, match=r"`threshold` of L2Norm, expected a number, got nan"):
            sg.L2Norm(float("nan"))
        with pytest.raises(ValueError, match=r"`mode` of L2Norm, expected 'above' or 'below', got 'over'"):
            sg.L2Norm(1.0, mode="over")
        with pytest.raises(TypeError, match=r"`stop`, expected a stop criterion .* got 0.5"):
            sg.StreamGen(3, 2, units=4, stop=0.5)

    def test_decode_wrong_shape(self, core_models):
        with pytest.raises(ValueError, match=r"expected a 3-D array with last dimension input_size=3, got shape \(12, 3\)"):
            core_models[("gru", "reset")].decode(np.zeros((12, 3)))


def test_criteria_serialize():
    for criterion in [sg.StopHead(0.25), sg.L2Norm(1.5, mode="below")]:
        config = keras.saving.serialize_keras_object(criterion)
        assert keras.saving.deserialize_keras_object(config) == criterion


# --------------------------------------------------------------------------- #
# Gradients: the question the original answer left open.
# --------------------------------------------------------------------------- #
def teacher_forced_grads(model, i, k):
    """d loss(Out[i]) / d (frames fed to model_b for Out[k]), and weight grads."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 5, 3)), tf.float32)
    frames = tf.constant(rng.normal(size=(2, 5, 9, 2)), tf.float32)
    lengths = tf.constant(rng.integers(2, 9, size=(2, 5)), tf.int32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(frames)
        out = model({"inputs": x, "frames": frames, "lengths": lengths}, training=True)
        loss = tf.reduce_sum(out["frames"][:, i] ** 2) + tf.reduce_sum(out["stop_logits"][:, i])
    fed = tape.gradient(loss, frames)[:, k]
    weights = tape.gradient(loss, model.trainable_variables)
    return fed.numpy(), weights


@pytest.mark.parametrize("mode", [  # carry: ~7 s, in the full run
    "reset", pytest.param("carry", marks=pytest.mark.slow)])
def test_gradients_reach_both_models(core_models, core_inputs, mode):
    model = core_models[("gru", mode)]
    outer = {id(v) for v in model.outer_cell.trainable_variables}
    inner = {id(v) for v in model.inner_cell.trainable_variables}
    # Teacher-forced pass.
    _, grads = teacher_forced_grads(model, i=3, k=3)
    by_id = {id(v): g for v, g in zip(model.trainable_variables, grads)}
    assert all(np.abs(by_id[v]).sum() > 0 for v in outer)
    assert all(np.abs(by_id[v]).sum() > 0 for v in inner)
    # Free-running decode with forced lengths (frames fed back are the model's).
    lengths = np.full((2, 5), 4)
    with tf.GradientTape() as tape:
        rt = model.decode(core_inputs[:2, :5], lengths=lengths)
        loss = tf.reduce_sum(rt[:, 3].flat_values ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    by_id = {id(v): g for v, g in zip(model.trainable_variables, grads)}
    assert all(by_id[v] is not None and np.abs(by_id[v]).sum() > 0 for v in outer | inner)


def test_no_gradient_across_outer_steps_in_reset_mode(core_models):
    model = core_models[("gru", "reset")]
    for k in (0, 2, 4):
        fed, _ = teacher_forced_grads(model, i=3, k=k)
        assert np.all(fed == 0.0), f"k={k}"
    fed, _ = teacher_forced_grads(model, i=3, k=3)
    assert np.abs(fed).sum() > 0


def test_gradient_flows_from_previous_output_in_carry_mode(core_models):
    model = core_models[("gru", "carry")]
    fed, _ = teacher_forced_grads(model, i=3, k=2)
    assert np.abs(fed).sum() > 0  # horizontal flow from Out[i-1] into Out[i]
    fed, _ = teacher_forced_grads(model, i=3, k=4)
    assert np.all(fed == 0.0)  # and never from the future


def test_stop_argument_that_is_not_a_criterion():
    with pytest.raises(TypeError, match=r"invalid value for argument `stop`.* got 'head'"):
        sg.StreamGen(3, 2, units=4, stop="head")
    with pytest.raises(TypeError, match=r"invalid element in argument `stop`.* got 0.5"):
        sg.StreamGen(3, 2, units=4, stop=[sg.StopHead(0.5), 0.5])
