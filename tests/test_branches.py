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


@pytest.mark.slow
def test_mdn_samples_both_branches_and_mse_averages_them():
    import train_branches

    mdn, _ = train_branches.train("mdn", epochs=30)
    figures = train_branches.check(mdn, draws=2000)
    assert min(figures["branches"].values()) >= 0.3
    assert abs(figures["angle"] - make_branches.ALPHA) < 0.15  # on a branch, not between
    mse, _ = train_branches.train("mse", epochs=30)
    figures = train_branches.check(mse, draws=2000)
    assert figures["angle"] < make_branches.ALPHA / 2  # between the branches
