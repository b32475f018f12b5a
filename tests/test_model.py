"""StreamGen construction, validation, configs and saved files."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import streamgen as sg
from helpers import CELLS, MODES, assert_outputs_equal, make_model, ragged_to_lists


def run_python(script, quiet):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "STREAMGEN_QUIET_TF")}
    if quiet:
        env["STREAMGEN_QUIET_TF"] = "1"
    return subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, check=True, env=env)


@pytest.mark.slow  # a TensorFlow subprocess
def test_import_is_quiet_when_asked():
    result = run_python("import streamgen; streamgen.StreamGen(3, 2, units=4)", quiet=True)
    assert result.stderr == ""


@pytest.mark.slow  # a TensorFlow subprocess
def test_library_does_not_hide_the_hosts_stderr():
    """Unasked, the library leaves fd 2 alone while TensorFlow imports: a
    host program's own errors (and TensorFlow's lines) stay visible."""
    script = ("import os, streamgen\n"
              "os.write(2, b'host line\\n')\n"
              "streamgen.StreamGen(3, 2, units=4)\n"
              "os.write(2, b'after\\n')\n")
    result = run_python(script, quiet=False)
    assert result.stderr.startswith("host line\n") and result.stderr.endswith("after\n")
    # TensorFlow 2.21's own import lines (oneDNN, CUDA) reach the host's stderr.
    assert len(result.stderr.splitlines()) > 2
    # Quiet when asked, and only TensorFlow's import is silenced.
    assert run_python(script, quiet=True).stderr == "host line\nafter\n"


@pytest.mark.slow  # TensorFlow subprocesses
@pytest.mark.parametrize("imports", [
    "import streamgen; import keras",
    "import streamgen; import tensorflow; import keras",
    "import keras; import streamgen",
])
def test_load_model_right_after_import_finds_the_classes(imports, tmp_path):
    """`keras.models.load_model` works without touching a streamgen name first,
    whichever of streamgen / Keras is imported first (and quietly, when
    asked)."""
    path = tmp_path / "m.keras"
    make_model(seed=0).save(path)
    script = (f"{imports}\n"
              f"m = keras.models.load_model({str(path)!r})\n"
              "print(type(m).__module__, type(m).__name__, m.max_steps)")
    result = run_python(script, quiet=True)
    assert result.stdout == "streamgen.model StreamGen 9\n"
    if imports.startswith("import streamgen"):  # quiet when asked
        assert result.stderr == ""


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"max_steps": 0}, r"`max_steps`, expected an integer in \[1, 1024\], got 0"),
        ({"max_steps": 2.5}, r"`max_steps`, expected an integer in \[1, 1024\], got 2.5"),
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
    with pytest.raises(ValueError, match=r"^Received an invalid value for argument `outer`: "
                                         r"the cell takes inputs of width 5, but it gets "
                                         r"input_size = 3 here; use input_size=5\.$"):
        sg.StreamGen(3, 2, outer=trained)
    inner = keras.layers.LSTMCell(4)
    inner.build((None, 12))  # IR (10) + frame (2)
    with pytest.raises(ValueError, match=r"`inner`: the cell takes inputs of width 12, but "
                                         r"it gets ir_size \+ output_size = 8 \+ 2 = 10 "
                                         r"here; use ir_size=10\.$") as caught:
        sg.StreamGen(3, 2, ir_size=8, inner=inner)
    assert "\x1b[" not in str(caught.value)  # no terminal colour codes
    sg.StreamGen(3, 2, ir_size=10, inner=inner)  # the suggested ir_size fits


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


@pytest.mark.parametrize("mode, cell", [  # ~2 s each: two in the quick run
    pytest.param(mode, cell, id=f"{mode}-{cell}",
                 marks=() if (mode, cell) in {("reset", "gru"), ("carry", "lstm")}
                 else pytest.mark.slow)
    for mode in MODES for cell in CELLS])
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


def test_max_steps_is_bounded_and_decoding_memory_is_linear():
    from streamgen.runtimes.tf import compiled_functions

    with pytest.raises(ValueError, match=r"`max_steps`, expected an integer in \[1, 1024\], "
                                         r"got 8000"):
        sg.StreamGen(3, 2, units=4, max_steps=8000)
    # No constant of the compiled step grows with max_steps squared (there
    # was an identity matrix of max_steps x max_steps for the frame slots).
    model = sg.StreamGen(3, 2, units=4, ir_size=4, max_steps=1024)
    graph_def = compiled_functions(model).step_concrete(model.stop).graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:  # the while loop's body and cond
        nodes += list(function.node_def)
    sizes = [int(np.prod([d.size for d in node.attr["value"].tensor.tensor_shape.dim]))
             for node in nodes if node.op == "Const"]
    assert max(sizes) < 1024 * 16
    out = model.open_stream().step(np.zeros(3, np.float32))
    assert out.shape[1] == 2 and 0 <= len(out) <= 1024


def with_config(path, target, **changes):
    """A copy of a `.keras` file whose config.json has `changes`."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as copy:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                config["config"].update(changes)
                data = json.dumps(config).encode()
            copy.writestr(item, data)
    return str(target)


def test_a_config_that_no_longer_fits_its_weights_names_the_cause(tmp_path):
    path = tmp_path / "m.keras"
    make_model(seed=0).save(path)
    edited = with_config(path, tmp_path / "edited.keras", input_size=5)
    with pytest.raises(sg.NotAKerasModelError) as caught:
        sg.open_runtime(edited)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        f"{edited}: cannot load the model: its config.json does not fit the weights")
    # The cause itself, not a first line that ends in ":".
    assert "Layer 'outer_cell' expected 3 variables, but received 0" in message


def test_a_crafted_config_is_refused_with_its_cause(tmp_path):
    path = tmp_path / "m.keras"
    make_model(seed=0).save(path)
    crafted = with_config(path, tmp_path / "crafted.keras", max_steps=100000)
    with pytest.raises(sg.NotAKerasModelError,
                       match=r"crafted.keras: cannot load the model: Received an invalid "
                             r"value for argument `max_steps`, expected an integer in "
                             r"\[1, 1024\], got 100000\."):
        sg.open_runtime(crafted)


@pytest.mark.slow  # TensorFlow subprocesses
@pytest.mark.parametrize("module", ["streamgen.mdn", "streamgen.losses", "streamgen.runtimes.tf",
                                    "streamgen.runtimes.export", "streamgen.offline.evaluation"])
def test_any_module_can_be_imported_first(module):
    """Importing TensorFlow registers streamgen's Keras classes, which imports
    `model`: a module that imports TensorFlow at its top must already hold
    what `model` reads of it (no partially initialised module)."""
    result = run_python(f"import {module}\nimport streamgen\nprint(streamgen.StreamGen.__name__)",
                        quiet=True)
    assert result.stdout == "StreamGen\n"
