"""`streamgen train --frame-loss mdn --mixtures K` and `info` on the result."""

import json
import os

import pytest
from click.testing import CliRunner

import streamgen as sg  # noqa: F401  (first: quiet TensorFlow import)
from streamgen.cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.slow  # trains a model
def test_train_mdn_and_info(tmp_path):
    data = tmp_path / "train.jsonl"
    with open(os.path.join(ROOT, "samples", "train.jsonl")) as f:
        data.write_text("".join(next(f) for _ in range(8)))
    out = str(tmp_path / "mdn.keras")
    result = invoke(["train", str(data), "-o", out, "--epochs", "1", "--units", "8",
                     "--ir-size", "8", "--batch-size", "4", "--seed", "0", "-q",
                     "--frame-loss", "mdn", "--mixtures", "3"])
    assert result.exit_code == 0, result.output
    result = invoke(["info", "--model", out])
    assert result.exit_code == 0, result.output
    assert "frame_loss     mdn, 3 mixtures\n" in result.stdout
    facts = json.loads(invoke(["info", "--model", out, "--json"]).stdout)
    assert facts["frame_loss"] == "mdn" and facts["mixtures"] == 3
    result = invoke(["train", str(data), "-o", out, "--mixtures", "0"])
    assert result.exit_code == 2 and "--mixtures" in result.stderr
