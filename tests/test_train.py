"""Training: the masked loss, `fit` with callbacks, `evaluate`, the default model."""

import functools
import os
import pathlib

import keras
import numpy as np
import pytest

import streamgen as sg
from streamgen import losses
from helpers import export_litert, make_model

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "samples"


def softplus(z):
    return float(np.log1p(np.exp(z)))


def controlled_model(frame_bias, stop_bias, **kwargs):
    """A tiny model whose every frame is `frame_bias` (after the head's
    activation) and whose every stop logit is `stop_bias`."""
    options = dict(input_size=3, output_size=2, ir_size=4, units=4)
    options.update(kwargs)
    model = sg.StreamGen(**options)
    kernel, _ = model.frame_head.get_weights()
    model.frame_head.set_weights([np.zeros_like(kernel), np.asarray(frame_bias, np.float32)])
    kernel, _ = model.stop_head.get_weights()
    model.stop_head.set_weights([np.zeros_like(kernel), np.array([stop_bias], np.float32)])
    return model


def one_batch(inputs, targets, max_steps=9):
    dataset = sg.make_dataset(inputs, targets, batch_size=len(inputs), shuffle=False,
                              max_steps=max_steps)
    return next(iter(dataset))


# Two sequences: lengths [0, 1, 9] and [2] (its outer steps 1, 2 are padding).
HAND_LENGTHS = [[0, 1, 9], [2]]


def hand_data(output_size=2, one_hot=False, seed=0):
    rng = np.random.default_rng(seed)
    inputs = [rng.normal(size=(len(ls), 3)).astype(np.float32) for ls in HAND_LENGTHS]
    if one_hot:
        eye = np.eye(output_size, dtype=np.float32)
        targets = [[eye[rng.integers(0, output_size, n)] for n in ls] for ls in HAND_LENGTHS]
    else:
        targets = [[rng.normal(size=(n, output_size)).astype(np.float32) for n in ls]
                   for ls in HAND_LENGTHS]
    return inputs, targets


# ---------------------------------------------------------------------- #
# Options.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"frame_loss": "xent"}, r"`frame_loss`, expected one of \['mse', 'mae', 'categorical', 'mdn'\], got 'xent'"),
        ({"frame_loss": None}, r"`frame_loss`, .* got None"),
        ({"stop_loss_weight": -1.0}, r"`stop_loss_weight`, expected a finite non-negative number, got -1.0"),
        ({"stop_loss_weight": float("nan")}, r"`stop_loss_weight`, .* got nan"),
        ({"stop_pos_weight": 0}, r"`stop_pos_weight`, expected a finite positive number, got 0"),
        ({"stop_pos_weight": "2"}, r"`stop_pos_weight`, .* got '2'"),
        ({"stop_pos_weight": True}, r"`stop_pos_weight`, .* got True"),
    ],
)
def test_invalid_training_options(kwargs, error):
    with pytest.raises(ValueError, match=error):
        sg.StreamGen(3, 2, units=4, **kwargs)


def test_training_options_round_trip(tmp_path):
    model = make_model(frame_loss="categorical", stop_loss_weight=0.5, stop_pos_weight=3)
    config = model.get_config()
    assert (config["frame_loss"], config["stop_loss_weight"], config["stop_pos_weight"]) == (
        "categorical", 0.5, 3.0)
    path = tmp_path / "categorical.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == config
    # Categorical frames, greedy (the default sampler): each emitted frame is
    # the one-hot of the most likely class.
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    lengths = np.full((2, 5), 9, np.int32)
    frames = loaded.decode(x, lengths=lengths).flat_values.numpy()
    assert frames.shape == (90, 2)
    assert set(np.unique(frames)) == {0.0, 1.0}
    np.testing.assert_array_equal(frames.sum(axis=-1), 1.0)


def test_compile_with_a_loss_is_an_error():
    model = make_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = one_batch(*hand_data())
    with pytest.raises(ValueError, match=r"argument `loss` of compile\(\), expected None .* got 'mse'"):
        model.compute_loss(x, y, model(x))


# ---------------------------------------------------------------------- #
# The loss on hand-worked examples.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("frame_loss", ["mse", "mae", "categorical"])
def test_loss_with_controlled_outputs(frame_loss):
    """Every frame is `c` and every stop logit is `z`: the loss by hand.

    Stop steps (j <= L, none past the cap): L=0 -> [1]; L=1 -> [0, 1];
    L=9 -> nine 0s; L=2 -> [0, 0, 1]; padded outer steps -> none.
    So 15 stop steps, 3 of them positive; 0 + 1 + 9 + 2 = 12 frames.
    """
    z, pos_weight, stop_weight = 0.3, 2.0, 0.5
    categorical = frame_loss == "categorical"
    logits = np.array([0.2, -0.5], np.float32)
    model = controlled_model(logits, z, frame_loss=frame_loss,
                             stop_pos_weight=pos_weight, stop_loss_weight=stop_weight)
    inputs, targets = hand_data(one_hot=categorical)
    x, y = one_batch(inputs, targets)
    assert x["inputs"].shape == (2, 3, 3) and y["stop_mask"].shape == (2, 3, 9)

    true = np.concatenate([f for seq in targets for f in seq])  # (12, 2)
    assert true.shape == (12, 2)
    if frame_loss == "mse":
        expected_frame = np.mean((logits - true) ** 2)
    elif frame_loss == "mae":
        expected_frame = np.mean(np.abs(logits - true))
    else:
        probabilities = np.exp(logits) / np.exp(logits).sum()
        expected_frame = np.mean(-(true * np.log(probabilities)).sum(axis=1))
    expected_stop = (3 * pos_weight * softplus(-z) + 12 * softplus(z)) / 15

    y_pred = model(x)
    total = float(model.compute_loss(x, y, y_pred))
    np.testing.assert_allclose(total, expected_frame + stop_weight * expected_stop, rtol=1e-5)

    # The same figures through Keras' evaluate loop (compute_metrics).
    model.compile(optimizer="adam")
    figures = model.evaluate(x=sg.make_dataset(inputs, targets, shuffle=False),
                             verbose=0, return_dict=True)
    np.testing.assert_allclose(figures["frame_loss"], expected_frame, rtol=1e-5)
    np.testing.assert_allclose(figures["stop_loss"], expected_stop, rtol=1e-5)
    np.testing.assert_allclose(figures["loss"], total, rtol=1e-5)
    assert figures["stop_accuracy"] == pytest.approx(3 / 15)  # z > 0: "STOP" everywhere


def test_loss_by_hand_from_model_outputs():
    """The loss of a random model, recomputed with explicit loops over (n, t, j)."""
    model = make_model(seed=3, stop_scale=1.0)
    inputs, targets = hand_data(seed=4)
    x, y = one_batch(inputs, targets)
    y_pred = model(x)
    frames = y_pred["frames"].numpy()
    logits = y_pred["stop_logits"].numpy()

    squared, frame_count, bce, stop_count = 0.0, 0, 0.0, 0
    for n, seq in enumerate(targets):
        for t, out in enumerate(seq):  # real outer steps only
            L = len(out)
            for j in range(L):
                squared += np.mean((frames[n, t, j] - out[j]) ** 2)
                frame_count += 1
            for j in range(min(L + 1, 9)):  # the STOP token at j == L < 9
                label = float(j == L)
                p = 1 / (1 + np.exp(-logits[n, t, j]))
                bce -= label * np.log(p) + (1 - label) * np.log(1 - p)
                stop_count += 1
    assert (frame_count, stop_count) == (12, 15)
    expected = squared / frame_count + bce / stop_count
    np.testing.assert_allclose(float(model.compute_loss(x, y, y_pred)), expected, rtol=1e-5)


def test_sample_weight_weights_sequences():
    """A zero weight drops a sequence from both averages."""
    model = make_model(seed=5, stop_scale=1.0)
    inputs, targets = hand_data(seed=6)
    x, y = one_batch(inputs, targets)
    x0, y0 = one_batch(inputs[:1], targets[:1])
    weighted = losses.masked_losses(y, model(x), sample_weight=np.array([1.0, 0.0]))
    alone = losses.masked_losses(y0, model(x0))
    for key in ("frame_loss", "stop_loss", "stop_accuracy", "stop_count"):
        np.testing.assert_allclose(float(weighted[key]), float(alone[key]), rtol=1e-5)


# ---------------------------------------------------------------------- #
# Teacher forcing == free running when the targets are the model's outputs.
# ---------------------------------------------------------------------- #
def padded_frames(ragged, batch, steps, output_size):
    frames = ragged.values.to_tensor(shape=[batch * steps, 9, output_size])
    return frames.numpy().reshape(batch, steps, 9, output_size)


def mid_gap_threshold(probabilities):
    """A stop threshold inside the widest gap of the middle 40% of the
    probabilities: lengths vary, and no probability lies near it."""
    p = np.unique(probabilities)
    lo, hi = int(0.3 * len(p)), int(0.7 * len(p))
    k = lo + int(np.argmax(np.diff(p[lo:hi + 1])))
    return float((p[k] + p[k + 1]) / 2)


def assert_teacher_forcing_matches(model, x, stops):
    rng = np.random.default_rng(7)
    batch, steps = x.shape[:2]
    lengths = rng.integers(0, 10, (batch, steps)).astype(np.int32)
    lengths[0, :3] = [0, 9, 1]
    # Forced lengths, the model's own frames as the targets.
    frames = padded_frames(model.decode(x, lengths=lengths), batch, steps, model.output_size)
    forced = model({"inputs": x, "frames": frames, "lengths": lengths})
    emitted = np.arange(9) < lengths[..., None]
    assert emitted.sum() == lengths.sum() > 0
    np.testing.assert_allclose(forced["frames"].numpy()[emitted], frames[emitted], atol=1e-5)

    # Free-running: on the model's own frames, the teacher-forced stop
    # probability crosses the threshold at j == L and not before (in
    # "carry" mode this also checks the state handed on after the STOP step).
    probabilities = 1 / (1 + np.exp(-forced["stop_logits"].numpy()))
    stops = stops + [sg.StopHead(mid_gap_threshold(probabilities))]
    for stop in stops:
        free = model.decode(x, stop=[stop])
        free_lengths = free.values.row_lengths().numpy().reshape(batch, steps)
        frames = padded_frames(free, batch, steps, model.output_size)
        logits = model({"inputs": x, "frames": frames, "lengths": free_lengths})["stop_logits"]
        fires = 1 / (1 + np.exp(-logits.numpy())) > stop.threshold
        j = np.arange(9)
        assert not fires[j < free_lengths[..., None]].any()
        at_stop = j == free_lengths[..., None]
        assert fires[at_stop].all() and 0 < at_stop.sum() < batch * steps, stop


@pytest.mark.slow  # trains a model
@pytest.mark.parametrize("mode", ["reset", "carry"])
def test_teacher_forcing_matches_decoding(mode, train_trained):
    # The overfitted reset model stops on its own at the default threshold.
    stops = [sg.StopHead(0.5)] if mode == "reset" else []
    assert_teacher_forcing_matches(train_trained[mode], train_trained["x"], stops)


# ---------------------------------------------------------------------- #
# fit.
# ---------------------------------------------------------------------- #
def sample_subset(count, path="train.jsonl"):
    inputs, targets = sg.load_jsonl(SAMPLES / path, max_steps=9)
    return inputs[:count], targets[:count]


@pytest.fixture(scope="module")
def train_trained():
    """Tiny models trained on 8 sample sequences, in both decoder modes.

    The reset model overfits them; the carry model trains briefly.
    """
    inputs, targets = sample_subset(8)
    dataset = sg.make_dataset(inputs, targets, batch_size=8, seed=0)
    trained = {"inputs": inputs, "targets": targets, "history": {}}
    for mode, epochs in (("reset", 160), ("carry", 30)):
        keras.utils.set_random_seed(0)
        model = sg.StreamGen(3, 2, ir_size=16, units=16, decoder_state=mode)
        model.compile(optimizer=keras.optimizers.Adam(0.01))
        if mode == "reset":  # 160 epochs of one batch as one epoch: the same weights,
            # half the time (Keras' per-epoch set-up); no per-epoch history needed
            history = model.fit(dataset.repeat(), epochs=1, steps_per_epoch=epochs, verbose=0,
                                shuffle=False)
        else:
            history = model.fit(dataset, epochs=epochs, verbose=0, shuffle=False)
        trained[mode] = model
        trained["history"][mode] = history.history
    x = np.zeros((8, max(len(s) for s in inputs), 3), np.float32)
    for n, s in enumerate(inputs):
        x[n, :len(s)] = s
    trained["x"] = x
    return trained


@pytest.mark.slow  # trains a model (160 epochs)
def test_overfit_eight_sequences(train_trained):
    figures = sg.evaluate(train_trained["reset"], train_trained["inputs"], train_trained["targets"])
    assert figures["length_accuracy"] == 1.0
    assert figures["length_mae"] == 0.0
    assert figures["frame_mse"] < 0.1


@pytest.mark.slow  # trains a model
def test_training_runs_in_carry_mode(train_trained):
    history = train_trained["history"]["carry"]
    assert set(history) == {"loss", "frame_loss", "stop_loss", "stop_accuracy"}
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["stop_loss"][-1] < history["stop_loss"][0]
    np.testing.assert_allclose(
        history["loss"], np.add(history["frame_loss"], history["stop_loss"]), rtol=1e-4)


@pytest.mark.slow  # trains a model
def test_training_runs_with_categorical_frames():
    """One-hot frames (class j mod 3); the stop head learns L = class of x."""
    rng = np.random.default_rng(0)
    eye = np.eye(3, dtype=np.float32)
    inputs, targets = [], []
    for _ in range(16):
        k = rng.integers(0, 10, 6)
        inputs.append(np.stack([k / 9, np.ones(6), np.zeros(6)], 1).astype(np.float32))
        targets.append([eye[np.arange(n) % 3] for n in k])
    keras.utils.set_random_seed(0)
    model = sg.StreamGen(3, 3, ir_size=8, units=16, frame_loss="categorical")
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    history = model.fit(sg.make_dataset(inputs, targets, batch_size=16, seed=0),
                        epochs=40, verbose=0, shuffle=False).history
    assert history["frame_loss"][-1] < 0.5 * history["frame_loss"][0]
    assert history["stop_loss"][-1] < 0.5 * history["stop_loss"][0]
    frames = model.decode(np.stack(inputs), lengths=np.full((16, 6), 9, np.int32))
    np.testing.assert_allclose(frames.flat_values.numpy().sum(-1), 1.0, rtol=1e-5)


@pytest.mark.slow  # trains a model
def test_fit_with_validation_and_callbacks(tmp_path):
    inputs, targets = sample_subset(12)
    valid_inputs, valid_targets = sample_subset(4, "valid.jsonl")
    keras.utils.set_random_seed(1)
    model = sg.StreamGen(3, 2, ir_size=8, units=8, decoder_state="carry")
    model.compile(optimizer="adam")
    checkpoint = tmp_path / "checkpoint.keras"
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5),
        keras.callbacks.ModelCheckpoint(checkpoint),
    ]
    try:
        import tensorboard  # noqa: F401  (TensorBoard needs the package)

        callbacks.append(keras.callbacks.TensorBoard(tmp_path / "logs"))
    except ImportError:
        pass
    history = model.fit(
        sg.make_dataset(inputs, targets, batch_size=4, seed=0),
        validation_data=sg.make_dataset(valid_inputs, valid_targets, shuffle=False),
        epochs=2, verbose=0, shuffle=False, callbacks=callbacks,
    )
    assert set(history.history) == {
        "loss", "frame_loss", "stop_loss", "stop_accuracy",
        "val_loss", "val_frame_loss", "val_stop_loss", "val_stop_accuracy",
    }
    assert len(history.history["val_loss"]) == 2
    if len(callbacks) == 3:
        assert any((tmp_path / "logs").rglob("*tfevents*"))

    loaded = keras.models.load_model(checkpoint)  # safe_mode stays on
    assert isinstance(loaded, sg.StreamGen) and loaded.get_config() == model.get_config()
    x = np.random.default_rng(2).normal(size=(3, 10, 3)).astype(np.float32)
    for stop in (None, [sg.L2Norm(0.5)]):
        expected, got = model.decode(x, stop=stop), loaded.decode(x, stop=stop)
        np.testing.assert_array_equal(got.values.row_lengths(), expected.values.row_lengths())
        np.testing.assert_array_equal(got.flat_values, expected.flat_values)


@pytest.mark.slow  # trains two models
def test_fit_traces_the_step_once_and_trains_as_keras_does():
    """`make_train_function` builds the optimizer first: one trace of the
    train step, where Keras' own order (its variables made inside the first
    trace) takes two; the same weights after."""
    inputs, targets = sample_subset(12)
    weights, traces = [], []
    for keras_order in (False, True):
        keras.utils.set_random_seed(1)
        model = sg.StreamGen(3, 2, ir_size=8, units=8)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        calls = []
        step = model.train_step
        model.train_step = lambda data: calls.append(1) or step(data)
        if keras_order:  # Keras' own, without the override
            model.make_train_function = functools.partial(keras.Model.make_train_function,
                                                          model)
        model.fit(sg.make_dataset(inputs, targets, batch_size=4, seed=0), epochs=2,
                  verbose=0, shuffle=False)
        weights.append(model.get_weights())
        traces.append(len(calls))
    assert traces == [1, 2]
    for ours, keras_own in zip(*weights):
        np.testing.assert_array_equal(ours, keras_own)


# ---------------------------------------------------------------------- #
# evaluate.
# ---------------------------------------------------------------------- #
def test_evaluate_by_hand():
    """A model that always stops at once (lengths 0) and whose frames are `c`."""
    c = np.array([0.5, -1.0], np.float32)
    model = controlled_model(c, 10.0)
    inputs, targets = hand_data(seed=8)
    true_lengths = np.array([0, 1, 9, 2])
    true_frames = np.concatenate([f for seq in targets for f in seq])
    expected = {
        "length_accuracy": 1 / 4,
        "length_mae": true_lengths.mean(),
        "frame_mse": np.mean((true_frames - c) ** 2),
    }
    for batch_size in (1, 2, 256):
        figures = sg.evaluate(model, inputs, targets, batch_size=batch_size)
        assert figures.keys() == expected.keys()
        for key, value in expected.items():
            assert figures[key] == pytest.approx(value, rel=1e-6), key
    # `stop=` reaches the free-running pass: a criterion that never fires
    # gives the cap, 9, everywhere.
    never = sg.evaluate(model, inputs, targets, stop=[sg.L2Norm(float("inf"))])
    assert never["length_accuracy"] == 1 / 4
    assert never["length_mae"] == pytest.approx(np.abs(true_lengths - 9).mean())


@pytest.mark.slow  # three evaluations (~5 s)
def test_evaluate_padding_does_not_change_figures():
    """Variable-T sequences batched together == each sequence alone (any
    weights: a sharpened stop head, so that no length flips on float noise)."""
    model = make_model(decoder_state="carry", seed=2)
    inputs, targets = sample_subset(8)
    together = sg.evaluate(model, inputs, targets, batch_size=8)
    alone = sg.evaluate(model, inputs, targets, batch_size=1)
    assert together["length_accuracy"] == alone["length_accuracy"]
    assert together["frame_mse"] == pytest.approx(alone["frame_mse"], rel=1e-5)


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda i, t: (i[:1], t), r"do not match"),
        (lambda i, t: ([i[0][:2], i[1]], t), r"do not match"),
        (lambda i, t: (i, t), None),
    ],
)
def test_evaluate_rejects_mismatched_data(change, error):
    model = controlled_model([0.0, 0.0], 10.0)
    inputs, targets = change(*hand_data())
    if error is None:
        sg.evaluate(model, inputs, targets)
        with pytest.raises(ValueError, match=r"`batch_size`, expected a positive integer, got 0"):
            sg.evaluate(model, inputs, targets, batch_size=0)
    else:
        with pytest.raises(ValueError, match=error):
            sg.evaluate(model, inputs, targets)


# ---------------------------------------------------------------------- #
# The bundled default model.
# ---------------------------------------------------------------------- #
def test_default_model():
    path = pathlib.Path(sg.__file__).parent / "default_model.keras"
    assert os.path.getsize(path) < 1_000_000
    model = sg.load_default()
    assert isinstance(model, sg.StreamGen)
    assert (model.input_size, model.output_size, model.max_steps) == (3, 2, 9)
    inputs, targets = sg.load_jsonl(SAMPLES / "valid.jsonl", max_steps=9)
    figures = sg.evaluate(model, inputs, targets)
    assert figures["length_accuracy"] >= 0.95
    assert figures["frame_mse"] < 0.01


@pytest.mark.slow  # a LiteRT conversion and evaluations (~6 s each)
@pytest.mark.parametrize("decoder_state", ["reset", "carry"])
def test_evaluate_on_a_litert_export_equals_the_model(tmp_path, decoder_state):
    """`sg.evaluate` through a LiteRT runtime forces the true lengths by
    stepping (never-firing thresholds, cap = length + 1): the STOP step runs
    and, in carry mode, hands its state on, as `model.decode(x, lengths=)`."""
    pytest.importorskip("ai_edge_litert")
    model = make_model(decoder_state=decoder_state, seed=6,
                       stop=[sg.StopHead(0.5), sg.L2Norm(0.6, "below")])
    path = str(tmp_path / "m.tflite")
    export_litert(model, path)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(t, 3)).astype(np.float32) for t in (4, 7, 2)]
    targets = [[rng.normal(size=(int(rng.integers(0, 10)), 2)).astype(np.float32)
                for _ in range(len(x))] for x in inputs]
    expected = sg.evaluate(model, inputs, targets)
    for runtime in (sg.open_runtime(path), path):
        got = sg.evaluate(runtime, inputs, targets, batch_size=2)
        assert got == pytest.approx(expected, rel=1e-5)
