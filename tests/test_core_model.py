"""StreamGen construction, validation, configs and saved files."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import streamgen as sg
from conftest import CELLS, make_model
from test_core_stream import ragged_to_lists, assert_outputs_equal


def test_import_is_quiet():
    result = subprocess.run(
        [sys.executable, "-c", "import streamgen; streamgen.StreamGen(3, 2, units=4)"],
        capture_output=True, text=True, check=True,
    )
    assert result.stderr == ""


@pytest.mark.parametrize("imports", [
    "import streamgen; import keras",
    "import streamgen; import tensorflow; import keras",
    "import keras; import streamgen",
])
def test_load_model_right_after_import_finds_the_classes(imports, tmp_path):
    """`keras.models.load_model` works without touching a streamgen name first,
    whichever of streamgen / Keras is imported first (and quietly, when
    streamgen comes first)."""
    path = tmp_path / "m.keras"
    make_model(seed=0).save(path)
    script = (f"{imports}\n"
              f"m = keras.models.load_model({str(path)!r})\n"
              "print(type(m).__module__, type(m).__name__, m.max_steps)")
    result = subprocess.run([sys.executable, "-c", script],
                            capture_output=True, text=True, check=True)
    assert result.stdout == "streamgen.model StreamGen 9\n"
    if imports.startswith("import streamgen"):
        assert result.stderr == ""


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"max_steps": 0}, r"`max_steps`, expected a positive integer, got 0"),
        ({"max_steps": 2.5}, r"`max_steps`, expected a positive integer, got 2.5"),
        ({"input_size": -1}, r"`input_size`, expected a positive integer, got -1"),
        ({"units": True}, r"`units`, expected a positive integer, got True"),
        ({"cell": "transformer"}, r"`cell`, expected one of \['gru', 'lstm', 'simple_rnn'\], got 'transformer'"),
        ({"decoder_state": "keep"}, r"`decoder_state`, expected 'reset' or 'carry', got 'keep'"),
    ],
)
def test_invalid_arguments(kwargs, error):
    options = dict(input_size=3, output_size=2, units=4)
    options.update(kwargs)
    with pytest.raises(ValueError, match=error):
        sg.StreamGen(**options)


def test_invalid_cells():
    with pytest.raises(TypeError, match=r"`outer`, expected a Keras RNN cell .* got 'gru'"):
        sg.StreamGen(3, 2, outer="gru")
    trained = keras.layers.GRUCell(4)
    trained.build((None, 5))  # built for inputs of width 5, not 3
    with pytest.raises(ValueError, match=r"The `outer` cell cannot take inputs of width 3"):
        sg.StreamGen(3, 2, outer=trained)


def test_config_round_trip():
    model = make_model(
        "lstm", "carry", max_steps=5,
        stop=[sg.StopHead(0.7), sg.L2Norm(2.5, mode="below")],
    )
    config = model.get_config()
    assert config["max_steps"] == 5 and config["decoder_state"] == "carry"
    assert config["cell"] == "lstm" and config["outer"] is None
    clone = sg.StreamGen.from_config(config)
    assert clone.stop == (sg.StopHead(0.7), sg.L2Norm(2.5, mode="below"))
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["reset", "carry"])
def test_save_load_identical_outputs(tmp_path, core_models, core_inputs, cell, mode):
    model = core_models[(cell, mode)]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode stays on
    assert isinstance(loaded, sg.StreamGen)
    assert loaded.get_config() == model.get_config()
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    expected = ragged_to_lists(model.decode(core_inputs))
    got = ragged_to_lists(loaded.decode(core_inputs))
    for row_a, row_b in zip(got, expected):
        assert_outputs_equal(row_a, row_b, atol=0)


def test_user_supplied_trained_cells(tmp_path, core_inputs):
    """The original question's case: cells taken from trained Keras models."""
    keras.utils.set_random_seed(7)
    model_a = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(6, name="gru")])
    model_b = keras.Sequential(
        [keras.Input((None, 8 + 2)), keras.layers.LSTM(5, name="lstm")]
    )
    outer = model_a.get_layer("gru").cell
    inner = model_b.get_layer("lstm").cell
    model = sg.StreamGen(
        input_size=3, output_size=2, ir_size=8, outer=outer, inner=inner,
        decoder_state="carry", stop=[sg.L2Norm(0.8)],
    )
    # The trained weights are used as they are (shared, not copied).
    assert model.outer_cell is outer
    np.testing.assert_array_equal(model.outer_cell.get_weights()[0], outer.get_weights()[0])
    assert model.inner_state_sizes == [5, 5]
    path = tmp_path / "custom.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.outer_cell, keras.layers.GRUCell) and loaded.outer_cell.units == 6
    assert isinstance(loaded.inner_cell, keras.layers.LSTMCell) and loaded.inner_cell.units == 5
    for row_a, row_b in zip(
        ragged_to_lists(loaded.decode(core_inputs)), ragged_to_lists(model.decode(core_inputs))
    ):
        assert_outputs_equal(row_a, row_b, atol=0)


def test_ir_size_none_uses_outer_output():
    model = sg.StreamGen(3, 2, ir_size=None, units=6)
    assert model.ir_projection is None and model.ir_width == 6
    out = model({"inputs": np.zeros((2, 4, 3)), "frames": np.zeros((2, 4, 9, 2))})
    assert out["frames"].shape == (2, 4, 9, 2)


def test_teacher_forced_pass_shapes_and_errors(core_models):
    x = np.zeros((2, 4, 3), np.float32)
    frames = np.zeros((2, 4, 9, 2), np.float32)
    out = core_models[("gru", "reset")]({"inputs": x, "frames": frames})
    assert out["frames"].shape == (2, 4, 9, 2)
    assert out["stop_logits"].shape == (2, 4, 9)
    with pytest.raises(ValueError, match=r"padded to max_steps=9 inner steps, got shape \(2, 4, 5, 2\)"):
        core_models[("gru", "reset")]({"inputs": x, "frames": frames[:, :, :5]})
    with pytest.raises(ValueError, match=r"decoder_state='carry' needs `lengths`"):
        core_models[("gru", "carry")]({"inputs": x, "frames": frames})
