"""Fixtures of the CLI sampling tests: a tiny mdn model, saved and exported.

(`cli_model_path`, `cli_model` and `cli_tflite`, an mse model, are in
tests/conftest.py.)
"""

import pytest

from helpers import make_model


@pytest.fixture(scope="session")
def cli_mdn_path(tmp_path_factory):
    """A tiny saved mdn model (3 mixtures): input_size 3, output_size 2.

    Its stop head is only mildly sharpened, so that `--stop sample` draws
    lengths that vary with the seed.
    """
    path = tmp_path_factory.mktemp("cli_mdn") / "mdn.keras"
    make_model("gru", "reset", seed=6, stop_scale=3.0, frame_loss="mdn", mixtures=3).save(path)
    return str(path)


@pytest.fixture(scope="session")
def cli_mdn_tflite(cli_mdn_path, tmp_path_factory):
    """`cli_mdn_path` exported to LiteRT."""
    pytest.importorskip("ai_edge_litert")
    import streamgen as sg

    path = str(tmp_path_factory.mktemp("cli_mdn_lite") / "mdn.tflite")
    sg.load_model(cli_mdn_path).export_litert(path)
    return path
