"""Sampling in the runtimes: randomness as an input, seeds in the state.

Reproducibility on TF, LiteRT, `model.stream` and `model.decode`; state
resume; independent batch rows; TF vs LiteRT draw for draw (boundary cases
counted and bounded); the drawn distributions through the real step on a
model whose weights fix the class probabilities; `StopSample` lengths.
"""

import numpy as np
import pytest

import streamgen as sg
from streamgen import randomness, samplers

from helpers import make_model

SAMPLERS = [samplers.Random(), samplers.TopK(2, temperature=0.7), samplers.TopP(0.8, 1.5)]
# chi-square critical values at 1 - 1e-4 (df -> value); the draws are fixed
# by their seeds, so a test passes or fails the same way every run.
CHI2 = {1: 15.14, 2: 18.42, 3: 21.11}


@pytest.fixture(scope="session")
def models(sampling_models):
    return sampling_models


@pytest.fixture(scope="session")
def lite_paths(sampling_lite_paths):
    return sampling_lite_paths


def inputs(steps=6, rows=None, seed=0):
    shape = (steps, 3) if rows is None else (rows, steps, 3)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def outputs_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("kind", ["categorical", "mdn"])
@pytest.mark.parametrize("sampler", SAMPLERS, ids=repr)
def test_same_seed_same_outputs_two_seeds_differ(models, kind, sampler):
    model, x = models[kind], inputs(8)
    stop = [sg.StopSample()]
    run = lambda seed: list(model.stream(x, sampler=sampler, seed=seed, stop=stop))  # noqa: E731
    first, again, other = run(7), run(7), run(8)
    assert outputs_equal(first, again)
    assert not outputs_equal(first, other)
    assert sum(len(o) for o in first) > 0


def test_greedy_ignores_the_seed_and_mse_rejects_random_samplers(models):
    model, x = models["mse"], inputs(6)
    assert outputs_equal(list(model.stream(x, seed=1)), list(model.stream(x, seed=2)))
    # A greedy mse stream equals the compiled whole-sequence decode (today's path).
    decoded = model.decode(x[None]).to_list()[0]
    for got, want in zip(model.stream(x, seed=3), decoded):
        np.testing.assert_array_equal(got, np.asarray(want, np.float32).reshape(-1, 2))
    with pytest.raises(ValueError, match="frames are 'mse'"):
        model.open_stream(sampler="random")
    with pytest.raises(ValueError, match="frames are 'mse'"):
        sg.open_runtime(model).step(np.zeros((1, 3)), sg.open_runtime(model).initial_state(1),
                                    params=[[0.0, 1.0, 0.0, 1.0]])


def test_a_fresh_stream_gets_a_fresh_seed_carried_by_its_state(models):
    model, x = models["categorical"], inputs(5)
    a, b = model.open_stream(sampler="random"), model.open_stream(sampler="random")
    assert a.seed != b.seed
    a.step(x[0])
    seeds, positions = randomness.decode(a.get_state()["random"][0])
    assert seeds.tolist() == [a.seed] and positions.tolist() == [1]


@pytest.mark.parametrize("kind", ["categorical", "mdn"])
def test_state_resume_continues_exactly(models, kind):
    model, x = models[kind], inputs(10)
    options = dict(sampler=samplers.TopP(0.9), stop=[sg.StopSample(1.2)])
    s = model.open_stream(seed=11, **options)
    for t in range(4):
        s.step(x[t])
    saved = s.get_state()
    uninterrupted = [s.step(x[t]) for t in range(4, 10)]
    other = model.open_stream(seed=99, **options)  # another seed, another history
    other.step(x[0] * 2)
    other.set_state(saved)
    assert outputs_equal(uninterrupted, [other.step(x[t]) for t in range(4, 10)])


@pytest.mark.parametrize("kind", ["categorical", "mdn"])
def test_batch_rows_are_independent(models, kind):
    """Row b of a batched step equals that stream alone, whatever the other
    rows' samplers, seeds and stop criteria are (its lengths exactly)."""
    model = models[kind]
    runtime = sg.open_runtime(model)
    rows, x = 5, inputs(6, rows=5, seed=3)
    settings = [(samplers.Random(), [sg.StopSample()], 3),
                (samplers.Greedy(), [sg.StopHead(0.5)], 40),
                (samplers.TopK(1), [sg.StopSample(0.5), sg.L2Norm(9.0)], 41),
                (samplers.TopP(0.5, 2.0), [], 42),
                (samplers.TopK(3, 0.3), [sg.StopSample(3.0)], 2**32 - 1)]
    thresholds = np.stack([runtime.options(stop)[0] for _, stop, _ in settings])
    params = np.stack([runtime.sampler_params(s) for s, _, _ in settings])
    state = runtime.initial_state(rows, seeds=[seed for _, _, seed in settings])
    batched = []
    for t in range(6):
        frames, lengths, state = runtime.step(x[:, t], state, thresholds=thresholds,
                                              params=params)
        batched.append([frames[b, :lengths[b]] for b in range(rows)])
    for b, (sampler, stop, seed) in enumerate(settings):
        alone = model.open_stream(sampler=sampler, stop=stop, seed=seed)
        for t in range(6):
            want = alone.step(x[b, t])
            # the same draws: the same lengths; frames to the few ulps in
            # which oneDNN's batch-1 and batch-5 matmuls differ
            assert want.shape == batched[t][b].shape, (b, t)
            np.testing.assert_allclose(batched[t][b], want, atol=1e-5)


@pytest.mark.parametrize("kind", ["categorical", "mdn"])
def test_decode_equals_streams_of_the_row_seeds(models, kind):
    model, x = models[kind], inputs(5, rows=3, seed=8)
    decoded = model.decode(x, sampler="random", seed=20, stop=[sg.StopSample()]).to_list()
    for b in range(3):
        alone = model.open_stream(sampler="random", seed=randomness.derive_seed(20, b),
                                  stop=[sg.StopSample()])
        for t in range(5):
            want = alone.step(x[b, t])
            got = np.asarray(decoded[b][t], np.float32).reshape(-1, model.output_size)
            assert got.shape == want.shape  # lengths exact; frames to oneDNN's ulps
            np.testing.assert_allclose(got, want, atol=1e-5)
    per_row = model.decode(x, sampler="random",
                           seed=[randomness.derive_seed(20, b) for b in range(3)],
                           stop=[sg.StopSample()]).to_list()
    assert per_row == decoded


@pytest.mark.parametrize("kind", [  # a LiteRT conversion each (~5 s): mdn and mse in the full run
    "categorical", pytest.param("mdn", marks=pytest.mark.slow),
    pytest.param("mse", marks=pytest.mark.slow)])
def test_tf_and_litert_agree_draw_for_draw(models, lite_paths, kind):
    """Both runtimes step the same states with the same draws: lengths
    exact and frames to 1e-4, but for the draws within float32 round-off of
    a boundary, counted here and bounded (< 1 in 1,000 draws)."""
    model = models[kind]
    tf_runtime = sg.open_runtime(model)
    lite_runtime = sg.open_runtime(lite_paths[kind])
    rows, steps = 384, 12
    x = inputs(steps, rows=rows, seed=5)
    names = ["greedy"] if kind == "mse" else ["random", "top-k", "top-p", "greedy"]
    params = np.stack([tf_runtime.sampler_params(names[b % len(names)]) for b in range(rows)])
    stops = [[sg.StopSample()], [sg.StopSample(0.5), sg.StopHead(0.9)], [sg.StopHead(0.5)]]
    thresholds = np.stack([tf_runtime.options(stops[b % 3])[0] for b in range(rows)])
    state = tf_runtime.initial_state(rows, seeds=1000)
    draws = differ = 0
    for t in range(steps):
        a = tf_runtime.step(x[:, t], state, thresholds=thresholds, params=params)
        b = lite_runtime.step(x[:, t], state, thresholds=thresholds, params=params)
        np.testing.assert_array_equal(a[2][:, -4:], b[2][:, -4:])  # seeds and positions
        same = (a[1] == b[1]) & np.all(np.abs(a[0] - b[0]) <= 1e-4, axis=(1, 2))
        differ += int((~same).sum())
        draws += int(np.minimum(a[1] + 1, model.max_steps).sum())
        state = a[2]  # both continue from the TF state
    assert draws > 8000
    assert differ * 1000 < draws, (differ, draws)
    print(f"{kind}: {differ} of {draws} draws differ")


@pytest.mark.parametrize("kind", [  # a LiteRT conversion each (~5 s): mdn and mse in the full run
    "categorical", pytest.param("mdn", marks=pytest.mark.slow),
    pytest.param("mse", marks=pytest.mark.slow)])
def test_litert_greedy_step_equals_the_full_step_on_greedy_rows(lite_paths, kind):
    """A call where no row samples runs the file's greedy step (format 5);
    the full step on the same greedy rows (with their draws, which they do
    not read) gives the same outputs: lengths equal, frames and states to
    1e-6, over a whole stream of steps, with thresholds of every other kind."""
    runtime = sg.open_runtime(lite_paths[kind])
    rows, steps = 16, 8
    x = inputs(steps, rows=rows, seed=9)
    stops = [[sg.StopHead(0.5)], [sg.L2Norm(1.0, "above"), sg.StopHead(0.9)],
             [sg.L2Norm(0.5, "below")], []]
    thresholds = np.stack([runtime.options(stops[b % 4])[0] for b in range(rows)])
    state = runtime.initial_state(rows, seeds=7)
    lengths = []
    for t in range(steps):
        greedy = runtime.run(x[:, t], state, thresholds=thresholds, samples=False)
        full = runtime.run(x[:, t], state, thresholds=thresholds, samples=True)
        np.testing.assert_array_equal(greedy[1], full[1])  # lengths
        np.testing.assert_allclose(greedy[0], full[0], atol=1e-6)  # frames
        np.testing.assert_allclose(greedy[2], full[2], atol=1e-6)  # states
        lengths += greedy[1].tolist()
        state = greedy[2]
    assert len(set(lengths)) >= 3  # the stop tests decided (not all 0 or all capped)
    # one interpreter per step and bucket (1 row: made when the file opened)
    assert sorted(runtime._greedy_buckets) == sorted(runtime._buckets) == [1, 16]


def test_litestream_samples_like_stream(models, lite_paths):
    model, x = models["categorical"], inputs(8)
    options = dict(sampler=samplers.TopK(3), stop=[sg.StopSample()], seed=5)
    tf_out = list(model.stream(x, **options))
    lite = sg.LiteStream(lite_paths["categorical"], **options)
    lite_out = [lite.step(v) for v in x]
    assert [len(o) for o in tf_out] == [len(o) for o in lite_out]
    for a, b in zip(tf_out, lite_out):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_an_older_export_is_refused_by_name(lite_paths, tmp_path):
    import json

    from streamgen.runtimes import lite

    content = open(lite_paths["categorical"], "rb").read()
    older = content.replace(b'"version": 5', b'"version": 4')
    path = tmp_path / "old.tflite"
    path.write_bytes(older)
    with pytest.raises(sg.NotAnExportError if hasattr(sg, "NotAnExportError") else ValueError,
                       match="version 4; this streamgen reads version 5: export it again"):
        lite.LiteRuntime(str(path))
    assert json.loads(json.dumps(lite.FORMAT_VERSION)) == 5


# ---------------------------------------------------------------------- #
# Distributions through the real step.
# ---------------------------------------------------------------------- #
PROBS = np.array([0.5, 0.25, 0.15, 0.1], np.float32)


@pytest.fixture(scope="module")
def fixed_model():
    """A categorical model whose frame head always gives `PROBS` and whose
    stop head always gives logit `STOP_LOGIT` (zero kernels)."""
    model = make_model("gru", "reset", seed=1, frame_loss="categorical", output_size=4,
                       max_steps=12)
    kernel, _ = model.frame_head.get_weights()
    model.frame_head.set_weights([np.zeros_like(kernel), np.log(PROBS)])
    kernel, _ = model.stop_head.get_weights()
    model.stop_head.set_weights([np.zeros_like(kernel), np.array([STOP_LOGIT], np.float32)])
    return model


STOP_LOGIT = -1.0  # sigmoid(-1) = 0.269


def first_classes(model, sampler, n=4000, seed=0):
    """The class of the first frame of `n` rows seeded `derive_seed(seed, b)`."""
    runtime = sg.open_runtime(model, stop=[], max_steps=1, sampler=sampler)
    frames, lengths, _ = runtime.step(np.zeros((n, 3), np.float32),
                                      runtime.initial_state(n, seeds=seed))
    assert (lengths == 1).all()
    one_hot = frames[:, 0]
    assert np.array_equal(one_hot.sum(-1), np.ones(n))  # one-hot frames
    return one_hot.argmax(-1)


def chi_square(classes, expected_probs):
    n = len(classes)
    support = expected_probs > 0
    counts = np.bincount(classes, minlength=len(expected_probs))
    assert counts[~support].sum() == 0  # never outside the support
    expected = n * expected_probs[support]
    return float((((counts[support] - expected) ** 2) / expected).sum()), int(support.sum()) - 1


def tempered(temperature, keep):
    logits = np.log(PROBS.astype(np.float64)) / temperature
    p = np.exp(logits - logits.max())
    p = p / p.sum()
    p = np.where(keep(p), p, 0.0)
    return p / p.sum()


@pytest.mark.parametrize("sampler, keep", [
    (samplers.Random(), lambda p: p > -1),
    (samplers.Random(temperature=0.5), lambda p: p > -1),
    (samplers.Random(temperature=2.0), lambda p: p > -1),
    (samplers.TopK(2), lambda p: np.argsort(np.argsort(-p)) < 2),
    (samplers.TopK(3, temperature=0.7), lambda p: np.argsort(np.argsort(-p)) < 3),
    # the nucleus: classes whose preceding cumulative mass is below p
    (samplers.TopP(0.7), lambda p: (np.cumsum(np.sort(p)[::-1]) - np.sort(p)[::-1])[
        np.argsort(np.argsort(-p))] < 0.7),
    (samplers.TopP(0.5, temperature=2.0), lambda p: (np.cumsum(np.sort(p)[::-1])
                                                    - np.sort(p)[::-1])[
        np.argsort(np.argsort(-p))] < 0.5),
], ids=lambda value: None if callable(value) else repr(value))  # stable ids (pytest-xdist)
def test_drawn_frequencies_follow_the_tempered_probabilities(fixed_model, sampler, keep):
    classes = first_classes(fixed_model, sampler)
    value, df = chi_square(classes, tempered(sampler.temperature, keep))
    if df:
        assert value < CHI2[df], (value, np.bincount(classes, minlength=4))


def test_top_k_1_is_greedy(fixed_model):
    assert (first_classes(fixed_model, samplers.TopK(1)) == 0).all()
    assert (first_classes(fixed_model, samplers.Greedy()) == 0).all()


def test_stop_sample_lengths_follow_the_stop_head(fixed_model):
    """Each inner step stops with probability q = sigmoid(logit / T):
    P(length = l) = (1 - q)^l q below the cap, (1 - q)^cap at the cap."""
    n, cap = 4000, 12
    for temperature in (1.0, 0.5, 3.0):
        runtime = sg.open_runtime(fixed_model, stop=[sg.StopSample(temperature)])
        _, lengths, _ = runtime.step(np.zeros((n, 3), np.float32),
                                     runtime.initial_state(n, seeds=77))
        q = 1.0 / (1.0 + np.exp(-STOP_LOGIT / temperature))
        probs = np.array([(1 - q) ** l * q for l in range(cap)] + [(1 - q) ** cap])
        # pool the tail (expected counts below 5) into the last bin
        last = int(np.nonzero(n * probs >= 5)[0].max())
        pooled = np.concatenate([probs[:last], [probs[last:].sum()]])
        counts = np.bincount(np.minimum(lengths, last), minlength=last + 1)
        value = float((((counts - n * pooled) ** 2) / (n * pooled)).sum())
        # df = last; critical value at 1 - 1e-4 for df <= 12 is below 35
        assert value < 35.0, (temperature, value, counts.tolist())


# ---------------------------------------------------------------------- #
# Offline decoding: a record's seed comes from the run's seed and its key.
# ---------------------------------------------------------------------- #
def test_decode_sequences_seed_does_not_depend_on_the_batch_size(models):
    model = models["categorical"]
    rng = np.random.default_rng(4)
    sequences = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in (3, 7, 1, 5, 4)]
    options = dict(sampler="random", stop=[sg.StopSample()], seed=9)
    one = sg.decode_sequences(model, sequences, batch_size=1, **options)
    three = sg.decode_sequences(model, sequences, batch_size=3, **options)
    assert [[o.shape for o in s] for s in one] == [[o.shape for o in s] for s in three]
    for a, b in zip(one, three):
        for p, q in zip(a, b):
            np.testing.assert_allclose(p, q, atol=1e-5)
    # record n is a stream of seed derive_seed(9, n)
    for n, x in enumerate(sequences):
        alone = model.open_stream(sampler="random", stop=[sg.StopSample()],
                                  seed=randomness.derive_seed(9, n))
        for t, want in enumerate(x):
            got = one[n][t]
            want = alone.step(want)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5)
    other = sg.decode_sequences(model, sequences, batch_size=3, **{**options, "seed": 10})
    assert [[len(o) for o in s] for s in other] != [[len(o) for o in s] for s in one]


def write_records(path, rows, ids=False, seed=0):
    import json

    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for n in range(rows):
            record = {"x": rng.normal(size=(int(rng.integers(1, 6)), 3)).round(3).tolist()}
            if ids:
                record = {"id": f"r{n}", **record}
            fh.write(json.dumps(record) + "\n")


@pytest.mark.slow  # decodes at three batch sizes (~7 s)
@pytest.mark.parametrize("ids", [False, True])
def test_decode_jsonl_seed_does_not_depend_on_the_batch_size(models, tmp_path, ids):
    model = models["categorical"]
    source = tmp_path / "in.jsonl"
    write_records(source, 9, ids=ids)
    texts = []
    for batch_size in (1, 4, 9):
        out = tmp_path / f"out{batch_size}.jsonl"
        sg.decode_jsonl(model, [str(source)], str(out), batch_size=batch_size, seed=3,
                        sampler="top-p", stop=[sg.StopSample()])
        texts.append(out.read_text())
    assert texts[0] == texts[1] == texts[2]
    sg.decode_jsonl(model, [str(source)], str(tmp_path / "other.jsonl"), seed=4,
                    sampler="top-p", stop=[sg.StopSample()])
    assert (tmp_path / "other.jsonl").read_text() != texts[0]


@pytest.mark.slow
@pytest.mark.ray
def test_decode_ray_equals_decode_jsonl_whatever_the_shards(models, tmp_path, ray_cluster):
    from streamgen.offline.ray import decode_ray

    path = str(tmp_path / "m.keras")
    models["categorical"].save(path)
    source = tmp_path / "in.jsonl"
    write_records(source, 12, seed=1)
    options = dict(seed=5, sampler="random", stop=[{"class_name": "StopSample",
                                                    "config": {"temperature": 1.0}}])
    sg.decode_jsonl(path, [str(source)], str(tmp_path / "local.jsonl"), batch_size=5, **options)
    local = (tmp_path / "local.jsonl").read_text()
    # shards of 5, 5 and 2 records, each decoded in batches of 2: neither the
    # shards nor the batches are the local run's batches of 5 (one Ray run, one
    # actor that decodes the three shards in turn: TensorFlow starts once)
    totals = decode_ray(path, [str(source)], str(tmp_path / "ray"), lines_per_shard=5,
                        batch_size=2, workers=1, **options)
    assert len(totals["shards"]) == 3
    assert "".join(open(p).read() for p in totals["shards"]) == local
