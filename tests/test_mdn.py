"""Mixture-density frames: the loss against a numpy reference, its
gradients at the extremes, the model's head, config and greedy decoding."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import streamgen as sg
from streamgen import mdn
from helpers import make_model, toy_data


def nll_np(y, head):
    """Independent numpy reference, float64, one frame at a time."""
    d = y.shape[-1]
    k = head.shape[-1] // (1 + 2 * d)
    out = np.empty(y.shape[:-1])
    for index in np.ndindex(*y.shape[:-1]):
        h = head[index].astype(np.float64)
        logits, means = h[:k], h[k:k + k * d].reshape(k, d)
        raw = h[k + k * d:].reshape(k, d)
        scales = mdn.SCALE_FLOOR + np.log1p(np.exp(raw))
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        densities = np.prod(
            np.exp(-0.5 * ((y[index] - means) / scales) ** 2) / (scales * math.sqrt(2 * math.pi)),
            axis=-1)
        out[index] = -np.log((weights * densities).sum())
    return out


def test_nll_equals_numpy_reference():
    rng = np.random.default_rng(0)
    for k, d in [(1, 1), (3, 2), (5, 4)]:
        y = rng.normal(size=(4, 3, d)).astype(np.float32)
        head = rng.normal(size=(4, 3, k * (1 + 2 * d))).astype(np.float32)
        got = mdn.nll(tf.constant(y), tf.constant(head)).numpy()
        np.testing.assert_allclose(got, nll_np(y, head), rtol=1e-4, atol=1e-4)


def test_split_and_greedy_frame():
    head = np.arange(2 * 10, dtype=np.float32).reshape(2, 10) / 10  # K=2, D=2
    head[1, :2] = [3.0, -1.0]
    logits, means, scales = mdn.split(tf.constant(head), 2)
    np.testing.assert_array_equal(logits.numpy(), head[:, :2])
    np.testing.assert_array_equal(means.numpy(), head[:, 2:6].reshape(2, 2, 2))
    assert scales.shape == (2, 2, 2) and (scales.numpy() >= mdn.SCALE_FLOOR).all()
    np.testing.assert_allclose(scales.numpy(), mdn.SCALE_FLOOR + np.log1p(np.exp(head[:, 6:])).reshape(2, 2, 2), rtol=1e-6)
    greedy = mdn.greedy_frame(logits, means).numpy()
    np.testing.assert_array_equal(greedy, [head[0, 4:6], head[1, 2:4]])
    # Very negative raw scales sit on the floor, and never below it.
    _, _, floor = mdn.split(tf.fill((1, 10), -1e4), 2)
    np.testing.assert_allclose(floor.numpy(), mdn.SCALE_FLOOR)


def test_gradients_finite_at_the_floor_and_far_targets():
    k, d = 3, 2
    head = tf.Variable(tf.concat([tf.zeros((4, k)), tf.zeros((4, k * d)),
                                  tf.fill((4, k * d), -1e4)], axis=-1))  # scales at the floor
    y = tf.constant(np.full((4, d), 1e4, np.float32) * np.array([[1], [-1], [1], [-1]], np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(mdn.nll(y, head))
    grad = tape.gradient(loss, head)
    assert np.isfinite(loss.numpy()) and np.isfinite(grad.numpy()).all()
    assert loss.numpy() > 1e13  # (1e4 / 1e-3)^2 / 2 per channel
    # The same through the model's whole loss.
    model = sg.StreamGen(input_size=3, output_size=2, ir_size=8, units=8, frame_loss="mdn",
                         mixtures=3)
    inputs, targets = toy_data(3)
    targets = [[t * 1e4 for t in row] for row in targets]
    x, y_true = next(iter(sg.make_dataset(inputs, targets, batch_size=3, shuffle=False)))
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, y_true, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(loss.numpy())
    assert all(np.isfinite(g.numpy()).all() for g in grads if g is not None)


def test_mdn_model_config_describe_and_greedy_inner_step(tmp_path):
    model = make_model(frame_loss="mdn", mixtures=4)
    assert model.frame_head.units == 4 * (1 + 2 * 2)
    assert model.get_config()["mixtures"] == 4
    assert model.describe()["frame_loss"] == "mdn" and model.describe()["mixtures"] == 4
    assert "mixtures" not in make_model().describe()
    path = tmp_path / "mdn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.frame_loss == "mdn" and loaded.mixtures == 4
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    assert loaded.decode(x).to_list() == model.decode(x).to_list()
    # inner_step emits the mean of the most likely component.
    ir = tf.random.normal((3, model.ir_width), seed=1)
    state = model.initial_inner_state(ir)
    frame, stop_logit, _ = model.inner_step(ir, None, state)
    head, stop_again, _ = model.inner_head_step(ir, None, state)
    logits, means, scales = model.split_mixture(head)
    np.testing.assert_array_equal(frame.numpy(), model.greedy_frame(logits, means).numpy())
    np.testing.assert_array_equal(stop_logit.numpy(), stop_again.numpy())
    assert frame.shape == (3, 2) and head.shape == (3, 20)
    with pytest.raises(ValueError, match="frame_loss='mdn'"):
        make_model().split_mixture(head)
    with pytest.raises(ValueError, match="argument `mixtures`"):
        make_model(frame_loss="mdn", mixtures=0)


def test_other_frame_losses_are_unchanged():
    """mse frames: the head's output as it is, bit for bit."""
    model = make_model()
    ir = tf.random.normal((3, model.ir_width), seed=2)
    state = model.initial_inner_state(ir)
    frame, _, _ = model.inner_step(ir, None, state)
    output, _ = model.inner_cell(tf.pad(ir, [[0, 0], [0, 2]]), list(state))
    np.testing.assert_array_equal(frame.numpy(), model.frame_head(output).numpy())


@pytest.mark.slow  # trains a model
def test_fit_reports_the_mixture_nll_as_frame_loss():
    model = make_model(frame_loss="mdn", mixtures=2)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    inputs, targets = toy_data(4)
    ds = sg.make_dataset(inputs, targets, batch_size=4, shuffle=False)
    history = model.fit(ds, epochs=3, verbose=0, shuffle=False).history
    assert set(history) >= {"loss", "frame_loss", "stop_loss"}
    x, y_true = next(iter(ds))
    parts = model._loss_parts(y_true, model(x), None)
    mask = y_true["frame_mask"].numpy() > 0
    head = model(x)["mixture"].numpy()
    expected = nll_np(y_true["frames"].numpy()[mask], head[mask]).mean()
    np.testing.assert_allclose(parts["frame_loss"].numpy(), expected, rtol=1e-4)
    assert history["frame_loss"][-1] < history["frame_loss"][0]


@pytest.mark.slow  # a LiteRT conversion with the mdn head (~8 s)
def test_litert_export_of_an_mdn_model_decodes_greedily(tmp_path):
    pytest.importorskip("ai_edge_litert")
    model = make_model(frame_loss="mdn", mixtures=3, stop_network="separate")
    path = tmp_path / "mdn.tflite"
    model.export_litert(path)
    x = np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32)
    expected = list(model.stream(x))
    got = list(sg.LiteStream(str(path)).feed(x))
    assert [len(o) for o in got] == [len(o) for o in expected]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.slow  # training, then evaluation (~5 s)
def test_evaluate_reports_the_teacher_forced_frame_nll():
    model = make_model(frame_loss="mdn", mixtures=2)
    inputs, targets = toy_data(4)
    figures = sg.evaluate(model, inputs, targets)
    x, y_true = next(iter(sg.make_dataset(inputs, targets, batch_size=4, shuffle=False)))
    mask = y_true["frame_mask"].numpy() > 0
    expected = nll_np(y_true["frames"].numpy()[mask], model(x)["mixture"].numpy()[mask]).mean()
    np.testing.assert_allclose(figures["frame_nll"], expected, rtol=1e-4)
    assert "frame_nll" not in sg.evaluate(make_model(), inputs, targets)


def test_separate_stop_network_leaves_model_b_to_the_frames(tmp_path):
    model = make_model(frame_loss="mdn", mixtures=2, stop_network="separate")
    assert model.get_config()["stop_network"] == "separate"
    assert model.describe()["stop_network"] == "separate"
    assert model.stop_hidden.units == 8 and model.stop_head.kernel.shape == (8, 1)
    inputs, targets = toy_data(3)
    x, y_true = next(iter(sg.make_dataset(inputs, targets, batch_size=3, shuffle=False)))
    with tf.GradientTape() as tape:
        stop_loss = model._loss_parts(y_true, model(x, training=True), None)["stop_loss"]
    variables = model.inner_cell.trainable_variables + model.stop_hidden.trainable_variables
    grads = tape.gradient(stop_loss, variables)
    cell_grads = grads[:len(model.inner_cell.trainable_variables)]
    assert all(g is None or not np.any(g.numpy()) for g in cell_grads)  # detached
    assert any(np.any(g.numpy()) for g in grads[len(cell_grads):])  # its own net learns
    path = tmp_path / "separate.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    xs = np.random.default_rng(3).normal(size=(2, 4, 3)).astype(np.float32)
    assert loaded.decode(xs).to_list() == model.decode(xs).to_list()
    with pytest.raises(ValueError, match="argument `stop_network`.*'both'"):
        make_model(stop_network="both")
