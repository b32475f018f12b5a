"""`streamgen.offline.evaluation`: the total variation of length histograms."""

import numpy as np
import pytest

import streamgen as sg
from streamgen import randomness, samplers
from streamgen.offline.evaluation import length_tv, sampled_length_tv

from helpers import make_model, toy_data


def test_length_tv_equals_a_hand_computation():
    # p over lengths 0..3: [1/4, 1/2, 1/4, 0]; q: [1/6, 1/2, 0, 1/3]
    # 0.5 * (1/12 + 0 + 1/4 + 1/3) = 1/3
    true, sampled = [0, 1, 1, 2], [1, 1, 1, 3, 3, 0]
    assert length_tv(true, sampled, max_steps=4) == pytest.approx(1 / 3, abs=1e-12)
    assert length_tv(sampled, true, max_steps=3) == pytest.approx(1 / 3, abs=1e-12)
    assert length_tv(np.array([[2, 0], [1, 1]]), [2, 1, 0, 1], 9) == 0.0  # any shape
    assert length_tv([0, 0], [5], 5) == 1.0  # nothing in common


def test_length_tv_equals_numpy_on_random_lengths():
    rng = np.random.default_rng(0)
    true, sampled = rng.integers(0, 10, 200), rng.integers(0, 10, 700)
    p = np.array([(true == n).mean() for n in range(10)])
    q = np.array([(sampled == n).mean() for n in range(10)])
    assert length_tv(true, sampled, 9) == pytest.approx(0.5 * np.abs(p - q).sum(), abs=1e-12)


@pytest.mark.parametrize("args, message", [
    (([], [1], 3), "`true_lengths`, expected at least one length, got []."),
    (([1], [4], 3), "`sampled_lengths`, expected integers in [0, 3], got 4."),
    (([-1, 2], [1], 3), "`true_lengths`, expected integers in [0, 3], got -1."),
    (([0.5], [1], 3), "`true_lengths`, expected integers in [0, 3], got 'float64'."),
    (([1], [1], 0), "`max_steps`, expected a positive integer"),
])
def test_length_tv_errors(args, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        length_tv(*args)


def test_sampled_length_tv_decodes_the_inputs_samples_times():
    model = make_model("gru", "reset", seed=6, stop_scale=3.0, frame_loss="mdn", mixtures=3)
    inputs, targets = toy_data(n=4, seed=2)
    runtime = sg.open_runtime(model, stop=[sg.StopSample()])
    got = sampled_length_tv(runtime, inputs, targets, 3, sampler="random", seed=5)
    # By hand: copy s of sequence n is record s * 4 + n of seed 5.
    outs = sg.decode_sequences(runtime, inputs * 3, sampler=samplers.Random(), seed=5)
    sampled = [len(o) for sequence in outs for o in sequence]
    true = [len(o) for sequence in targets for o in sequence]
    assert got == length_tv(true, sampled, model.max_steps)
    assert 0.0 < got < 1.0
    # The same whatever the batch size; another seed draws other lengths.
    assert sampled_length_tv(runtime, inputs, targets, 3, sampler="random", seed=5,
                             batch_size=1) == got
    single = sg.Stream(runtime, sampler="random", seed=randomness.derive_seed(5, 4 + 1))
    assert [len(o) for o in single.feed(inputs[1])] == sampled[11:13]  # copy 1, sequence 1
    with pytest.raises(ValueError, match="`samples`, expected a positive integer"):
        sampled_length_tv(runtime, inputs, targets, 0)
    with pytest.raises(ValueError, match="inputs and targets that do not match"):
        sampled_length_tv(runtime, inputs, targets[:3], 2)
