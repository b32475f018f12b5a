"""`streamgen train --ray`: the command's checks and lines (Ray Train itself is
replaced here; tests/test_raytrain.py runs it on the session cluster)."""

import os

import pytest
from click.testing import CliRunner

from streamgen.training import ray as raytrain
from streamgen.cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "samples", "train.jsonl")
VALID = os.path.join(ROOT, "samples", "valid.jsonl")


def invoke(args):
    return CliRunner().invoke(cli, ["train", *args], catch_exceptions=False)


@pytest.fixture
def calls(monkeypatch):
    """Replaces `train_on_ray`: records its arguments, reports two epochs."""
    seen = []

    def fake(paths, output, *, on_epoch, **kwargs):
        seen.append(dict(kwargs, paths=paths, output=output))
        history = []
        for epoch in (1, 2):
            logs = {"epoch": epoch, "loss": 1.0 / epoch, "frame_loss": 0.5, "stop_loss": 0.5,
                    "stop_accuracy": 0.75, "val_loss": 2.0 / epoch, "seconds": 2.0,
                    "records": 2000, "records_per_s": 1000.0, "saved": True}
            if epoch == 2:
                on_epoch({"resumed": 1})
            on_epoch(logs)
            history.append(logs)
        return {"history": history, "best": (1, 1.0), "stopped": "epochs", "saved": True}

    monkeypatch.setattr(raytrain, "train_on_ray", fake)
    return seen


def test_ray_options_and_lines(calls, tmp_path):
    out = str(tmp_path / "m.keras")
    result = invoke([TRAIN, "--valid", VALID, "--ray", "--workers", "3", "--epochs", "2",
                     "--batch-size", "30", "--seed", "4", "--patience", "2", "--stop-loss-weight", "0.5", "-o", out])
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call["paths"] == [TRAIN] and call["output"] == out and call["valid"] == VALID
    assert (call["address"], call["workers"], call["epochs"], call["batch_size"],
            call["seed"], call["patience"], call["stop_loss_weight"]) == (None, 3, 2, 30, 4, 2,
                                                                          0.5)
    assert result.stdout.splitlines() == [
        "epoch 1/2: loss 1 frame_loss 0.5 stop_accuracy 0.75 stop_loss 0.5 val_loss 2 "
        "(2.0 s, 1,000 records/s on 3 workers)",
        "epoch 2/2: loss 0.5 frame_loss 0.5 stop_accuracy 0.75 stop_loss 0.5 val_loss 1 "
        "(2.0 s, 1,000 records/s on 3 workers)",
        f"saved {out}: the best of 2 epochs (epoch 2, val_loss 1)",
    ]
    assert result.stderr == ("streamgen: a worker failed; resumed from the checkpoint "
                             "of epoch 1\n")


def test_ray_address_and_data_after_the_flag(calls, tmp_path):
    out = str(tmp_path / "m.keras")
    assert invoke(["--ray", TRAIN, "-o", out, "-q"]).exit_code == 0
    assert invoke([TRAIN, "--ray", "10.0.0.1:6379", "-o", out, "-q"]).exit_code == 0
    assert [(c["paths"], c["address"], c["workers"]) for c in calls] == [
        ([TRAIN], None, 2), ([TRAIN], "10.0.0.1:6379", 2)]


@pytest.mark.parametrize("args, error", [
    (["--workers", "2", "-o", "m.keras"], "--workers needs --ray."),
    (["--ray", "-o", "no/such/folder/m.keras"],
     "Invalid value for '--output' / '-o': the folder 'no/such/folder' does not exist."),
    (["--ray", "--workers", "3", "-o", "m.keras"],
     "Invalid value for '--batch-size': 32 is not a multiple of --workers 3 (it is the "
     "global batch, split over the workers)."),
    (["--ray", "--workers", "0", "-o", "m.keras"],
     "Invalid value for '--workers': 0 is not in the range x>=1."),
])
def test_ray_usage_errors_before_any_worker(calls, args, error):
    result = invoke([TRAIN, *args])
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: {error}\n")
    assert calls == []
