"""The branching sample task: its files, and (slow) mdn vs mse models on it."""

import os
import sys

import numpy as np
import pytest

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "samples")
sys.path.insert(0, SAMPLES)
import make_branches  # noqa: E402


def test_files_are_what_the_script_writes(tmp_path):
    make_branches.main(["--out", str(tmp_path)])
    for name in ("branches_train.jsonl", "branches_valid.jsonl"):
        with open(tmp_path / name, "rb") as a, open(os.path.join(SAMPLES, name), "rb") as b:
            assert a.read() == b.read(), name


def test_the_task_branches_and_varies_in_length():
    rng = np.random.default_rng(0)
    x, y, branches = make_branches.make_sequence(rng, 3000)
    first = np.array([out[0] for out in y])
    np.testing.assert_array_equal(make_branches.branch_of(x, first), branches)
    angles = make_branches.angle_from_heading(x, first)
    np.testing.assert_allclose(np.abs(angles), make_branches.ALPHA, atol=1e-3)
    assert 0.47 < np.mean(branches > 0) < 0.53
    lengths = np.bincount([len(out) for out in y], minlength=7)
    assert lengths[[0, 1, 5, 6]].sum() == 0 and np.all(np.abs(lengths[2:5] / 3000 - 1 / 3) < 0.03)


def assert_acceptance(mdn, mse, on_the_branches=True):
    """Issue 16's acceptance on the branching task, with fixed seeds.

    2,000 streams from fixed headings, each of its own seed: the sampling
    noise of a share is ~0.011 and of the length TV ~0.02, far inside the
    margins (the shipped mdn model: shares 0.45 / 0.55, TV 0.064).

    `on_the_branches`: also that the mdn model's first frames lie on the
    branches, not between them. A fresh training meets the acceptance but not
    always this: how tightly its mixture settles on the branches depends on
    the seed and on the CPU's float rounding (seeds 1, 2, 3 on an AMD EPYC:
    41%, 1% and 25% of first frames between the branches; seed 1 on a Xeon,
    under 25%).
    """
    import train_branches

    figures = train_branches.check(mdn, draws=2000, seed=0)
    assert min(figures["branches"].values()) >= 0.3, figures["branches"]
    assert figures["length_tv"] <= 0.15, figures["lengths"]
    if on_the_branches:
        # The mean |angle| near ALPHA, and few first frames closer to the
        # heading than half the turn.
        angles = np.abs(figures["angles"])
        assert abs(angles.mean() - make_branches.ALPHA) < 0.15, angles.mean()
        assert np.mean(angles < make_branches.ALPHA / 2) < 0.25, np.mean(angles < 0.3)
    figures = train_branches.check(mse, draws=2000, seed=0)
    # Between the branches: every first frame closer to the heading than
    # half the turn, so on neither branch.
    assert np.all(np.abs(figures["angles"]) < make_branches.ALPHA / 2), \
        np.abs(figures["angles"]).max()
    return figures


@pytest.mark.slow
def test_shipped_models_meet_the_acceptance():
    """The models samples/ ships (`train_branches.py --out samples`)."""
    import keras

    models = [keras.saving.load_model(os.path.join(SAMPLES, f"branches_{kind}.keras"))
              for kind in ("mdn", "mse")]
    assert_acceptance(*models)


@pytest.mark.slow
def test_training_command_meets_the_acceptance():
    """`train_branches.train` with its defaults (seed 1, 40 epochs) meets the
    acceptance (15-30 s a model on 2 free CPU cores)."""
    import train_branches

    mdn, figures = train_branches.train("mdn")
    assert figures["stop_loss"] < 0.29  # the optimum is ln(3) / 4 = 0.2747
    mse, _ = train_branches.train("mse")
    assert_acceptance(mdn, mse, on_the_branches=False)
