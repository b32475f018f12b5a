"""Samplers: configs, per-row parameters, the graph functions against their
numpy references (TF, XLA, LiteRT), and drawn distributions."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import streamgen as sg
from streamgen import randomness
from streamgen import samplers as S

ALL = [S.Greedy(), S.Random(0.5), S.TopK(3, temperature=2.0), S.TopP(0.7), S.TopK(1)]


def test_configs_round_trip():
    for sampler in ALL:
        config = S.serialize(sampler)
        assert S.get(json.loads(json.dumps(config))) == sampler
        assert type(sampler).from_config(sampler.get_config()) == sampler
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sampler))
        assert restored == sampler
    assert repr(S.TopK(3)) == "TopK(k=3, temperature=1.0)"
    assert S.get(None) == S.Greedy() and S.get("greedy") == S.Greedy()
    assert S.get("top-k") == S.get("top_k") == S.TopK(5)
    assert S.get("top-p") == S.TopP(0.9) and S.get("random") == S.Random()
    assert S.get({"class_name": "streamgen>TopP", "config": {"p": 0.5}}) == S.TopP(0.5)
    assert sg.samplers is S
    assert S.TopK(2) != S.TopK(3) and S.Random() != S.TopP(1.0)


@pytest.mark.parametrize("make, match", [
    (lambda: S.Random(0), "argument `temperature` of Random.*got 0"),
    (lambda: S.Random(float("inf")), "argument `temperature`"),
    (lambda: S.TopK(0), "argument `k` of TopK.*got 0"),
    (lambda: S.TopK(2.5), "argument `k`"),
    (lambda: S.TopP(0.0), "argument `p` of TopP.*got 0.0"),
    (lambda: S.TopP(1.5), "argument `p`"),
    (lambda: S.get("nucleus"), "argument `sampler`.*'nucleus'"),
    (lambda: S.get({"class_name": "Beam", "config": {}}), "argument `sampler`"),
    (lambda: S.get({"class_name": "TopK", "config": {"q": 1}}), "config of TopK takes k"),
    (lambda: S.row_params([S.Greedy()], 2), "a list of 2"),
])
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_check_applies_names_the_frame_kind():
    for kind in ("mse", "mae", "categorical", "mdn"):
        assert S.check_applies(None, kind) == S.Greedy()
    for kind in ("categorical", "mdn"):
        assert S.check_applies("top-p", kind) == S.TopP(0.9)
    for kind in ("mse", "mae"):
        with pytest.raises(ValueError, match=f"frames are '{kind}'"):
            S.check_applies(S.Random(), kind)


def test_row_params_and_draws():
    params = S.row_params(ALL, 5)
    np.testing.assert_array_equal(params, np.array([
        [1, 1, 0, 1], [0, 0.5, 0, 1], [0, 2, 3, 1], [0, 1, 0, 0.7], [0, 1, 1, 1]], np.float32))
    assert S.row_params(S.TopK(2), 3).shape == (3, 4)
    assert [S.draws_per_step(k, 3) for k in ("mse", "mae", "categorical", "mdn")] == [1, 1, 2, 6]
    assert S.draws_per_step("mdn", 4) == 6 and S.draws_per_step("mdn", 1) == 4


def random_case(rows, classes, components=3, depth=3, seed=0):
    rng = np.random.default_rng(seed)
    probs = S._softmax_np(rng.normal(size=(rows, classes)) * 2).astype(np.float32)
    logits = rng.normal(size=(rows, components)).astype(np.float32)
    means = rng.normal(size=(rows, components, depth)).astype(np.float32)
    scales = np.exp(rng.normal(size=(rows, components, depth))).astype(np.float32)
    kinds = [S.Greedy(), S.Random(0.5), S.TopK(2), S.TopP(0.6, 2.0), S.TopK(1), S.Random(3.0)]
    params = S.row_params([kinds[b % len(kinds)] for b in range(rows)], rows)
    u = randomness.uniforms(np.arange(rows), np.zeros(rows, int), 2 + S.normal_draws(depth))
    return probs, logits, means, scales, params, u


@pytest.mark.parametrize("jit", [False, True])
def test_graph_functions_equal_numpy(jit):
    probs, logits, means, scales, params, u = random_case(300, 7)
    cat = tf.function(S.sample_categorical, jit_compile=jit)
    mdn = tf.function(S.sample_mdn, jit_compile=jit)
    got = cat(probs, params, u[:, 1]).numpy()
    np.testing.assert_array_equal(got, S.sample_categorical_np(probs, params, u[:, 1]))
    got = mdn(logits, means, scales, params, u[:, 1], u[:, 2:]).numpy()
    np.testing.assert_allclose(
        got, S.sample_mdn_np(logits, means, scales, params, u[:, 1], u[:, 2:]), atol=1e-5)


def test_litert_builtins_equal_numpy():
    ai_edge_litert = pytest.importorskip("ai_edge_litert.interpreter")
    probs, logits, means, scales, params, u = random_case(50, 7)
    specs = [tf.TensorSpec((None, 7)), tf.TensorSpec((None, 4)), tf.TensorSpec((None,)),
             tf.TensorSpec((None, 3)), tf.TensorSpec((None, 3, 3)), tf.TensorSpec((None, 3, 3)),
             tf.TensorSpec((None, 4))]

    @tf.function(input_signature=specs)
    def both(p, pa, uc, lg, mu, sc, un):
        return S.sample_categorical(p, pa, uc), S.sample_mdn(lg, mu, sc, pa, uc, un)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [both.get_concrete_function()], both)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    interpreter = ai_edge_litert.Interpreter(model_content=converter.convert())
    feeds = [probs, params, u[:, 1], logits, means, scales, u[:, 2:]]
    inputs = interpreter.get_input_details()
    for detail, value in zip(inputs, feeds):
        interpreter.resize_tensor_input(detail["index"], value.shape)
    interpreter.allocate_tensors()
    for detail, value in zip(inputs, feeds):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    cat, mdn = (interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details())
    np.testing.assert_array_equal(cat, S.sample_categorical_np(probs, params, u[:, 1]))
    np.testing.assert_allclose(
        mdn, S.sample_mdn_np(logits, means, scales, params, u[:, 1], u[:, 2:]), atol=1e-5)


def tempered(probs, temperature):
    w = np.exp(np.log(probs) / temperature)
    return w / w.sum()


PROBS = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], np.float32)
N = 20000


def draw_counts(sampler, seed=1):
    """N draws of the graph function for one fixed distribution -> counts per class."""
    probs = np.tile(PROBS, (N, 1))
    params = S.row_params(sampler, N)
    u = randomness.uniforms(np.full(N, seed), np.arange(N), 2)[:, 1]
    one_hot = S.sample_categorical(tf.constant(probs), tf.constant(params), tf.constant(u)).numpy()
    assert (one_hot.sum(axis=1) == 1).all()
    return one_hot.sum(axis=0)


def chi_square(counts, expected_probs):
    support = expected_probs > 0
    expected = expected_probs[support] * counts.sum()
    return float((((counts[support] - expected) ** 2) / expected).sum())


@pytest.mark.parametrize("sampler, expected", [
    (S.Random(), PROBS),
    (S.Random(0.5), tempered(PROBS, 0.5)),
    (S.Random(2.0), tempered(PROBS, 2.0)),
    (S.TopK(3), np.r_[PROBS[:3] / PROBS[:3].sum(), np.zeros(3)]),
    (S.TopK(2, temperature=2.0), np.r_[tempered(PROBS, 2.0)[:2] / tempered(PROBS, 2.0)[:2].sum(),
                                       np.zeros(4)]),
    # The nucleus of 0.6: 0.4 + 0.25 = 0.65 reaches it -> the first two.
    (S.TopP(0.6), np.r_[PROBS[:2] / PROBS[:2].sum(), np.zeros(4)]),
    # The nucleus of 0.85: 0.4 + 0.25 + 0.15 = 0.8 falls short, the fourth
    # reaches 0.9 -> the first four. (Not 0.8: the sum lands on it, and float32
    # rounding, which differs between CPUs, then decides the fourth.)
    (S.TopP(0.85), np.r_[PROBS[:4] / PROBS[:4].sum(), np.zeros(2)]),
])
def test_drawn_frequencies_match_tempered_probabilities(sampler, expected):
    counts = draw_counts(sampler)
    assert counts[expected == 0].sum() == 0  # never outside the top k / the nucleus
    # 5 degrees of freedom at most: P(chi2 > 30) < 2e-5; the seed is fixed.
    assert chi_square(counts, expected) < 30.0
    assert np.abs(counts / N - expected).max() < 0.015


def test_top_k_1_is_greedy():
    probs, _, _, _, _, u = random_case(500, 9, seed=4)
    greedy = S.sample_categorical(probs, S.row_params(S.Greedy(), 500), u[:, 1]).numpy()
    for sampler in (S.TopK(1), S.TopK(1, temperature=0.3), S.TopP(1e-6)):
        got = S.sample_categorical(probs, S.row_params(sampler, 500), u[:, 1]).numpy()
        np.testing.assert_array_equal(got, greedy)
    np.testing.assert_array_equal(greedy.argmax(axis=1), probs.argmax(axis=1))


def test_mdn_draws_follow_the_mixture():
    rows = 20000
    logits = np.tile(np.log(np.array([[0.7, 0.3]], np.float32)), (rows, 1))
    means = np.tile(np.array([[[-5.0, 1.0], [5.0, 2.0]]], np.float32), (rows, 1, 1))
    scales = np.tile(np.array([[[0.5, 0.1], [1.0, 0.2]]], np.float32), (rows, 1, 1))
    u = randomness.uniforms(np.full(rows, 3), np.arange(rows), 2 + S.normal_draws(2))
    params = S.row_params(S.Random(), rows)
    frames = S.sample_mdn(logits, means, scales, params, u[:, 1], u[:, 2:]).numpy()
    left = frames[:, 0] < 0
    assert abs(left.mean() - 0.7) < 0.015
    np.testing.assert_allclose(frames[left].mean(axis=0), [-5.0, 1.0], atol=0.03)
    np.testing.assert_allclose(frames[left].std(axis=0), [0.5, 0.1], rtol=0.05)
    np.testing.assert_allclose(frames[~left].std(axis=0), [1.0, 0.2], rtol=0.05)
    # Temperature 0.25 halves the scales; greedy is the mean of component 0.
    params = S.row_params(S.Random(0.25), rows)
    cold = S.sample_mdn(logits, means, scales, params, u[:, 1], u[:, 2:]).numpy()
    np.testing.assert_allclose(cold[cold[:, 0] < 0].std(axis=0), [0.25, 0.05], rtol=0.05)
    greedy = S.sample_mdn(logits, means, scales, S.row_params(S.Greedy(), rows),
                          u[:, 1], u[:, 2:]).numpy()
    np.testing.assert_array_equal(greedy, np.tile([[-5.0, 1.0]], (rows, 1)))


def test_stop_sample_fires_with_the_tempered_probability():
    rows = 40000
    logits = np.linspace(-3.0, 3.0, rows).astype(np.float32)
    u = randomness.uniforms(np.full(rows, 11), np.arange(rows), 1)[:, 0]
    for temperature in (1.0, 0.5, 3.0):
        criterion = sg.StopSample(temperature)
        fired = criterion.fires(None, logits, criterion.threshold, u).numpy()
        p = 1 / (1 + np.exp(-logits / temperature))
        # Per eighth of the logit range, the firing rate matches the mean probability.
        for part_fired, part_p in zip(np.split(fired, 8), np.split(p, 8)):
            assert abs(part_fired.mean() - part_p.mean()) < 0.025
        np.testing.assert_array_equal(fired, u < p.astype(np.float32))


def test_stop_sample_config():
    criterion = sg.StopSample(temperature=0.5)
    assert repr(criterion) == "StopSample(temperature=0.5)"
    assert criterion.threshold == 0.5 and criterion.kind() == sg.StopSample(2.0).kind()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(criterion))
    assert restored == criterion
    from streamgen import criteria, stopping
    assert stopping.normalize_stop({"class_name": "StopSample", "config": {"temperature": 0.5}}) == (
        criterion,)
    as_dict = criteria.check_criterion_dict({"class_name": "StopSample", "config": {}})
    assert as_dict == {"class_name": "StopSample", "config": {"temperature": 1.0}}
    assert criteria.criterion_value(as_dict) == 1.0
    for bad in (0, -1.0, float("nan"), "hot"):
        with pytest.raises(ValueError, match="argument `temperature`"):
            sg.StopSample(bad)
    with pytest.raises(ValueError, match="needs the step's uniform draw"):
        criterion.fires(None, tf.zeros(2), 0.5)
