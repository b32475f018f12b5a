"""`streamgen train`, `evaluate`, `info`, `plot`, `export` through `CliRunner`."""

import json
import os
import re
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import streamgen as sg
from streamgen.cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")


def invoke(args, input=None):
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


def usage(command, error, arguments=""):
    return (f"Usage: streamgen {command} [OPTIONS]{arguments}\n"
            f"Try 'streamgen {command} --help' for help.\n\nError: {error}\n")


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory):
    """Small JSONL files cut from the samples: 12 train, 6 valid sequences."""
    folder = tmp_path_factory.mktemp("cli_data")
    paths = {}
    for name, count in (("train", 12), ("valid", 6)):
        with open(os.path.join(SAMPLES, f"{name}.jsonl")) as f:
            lines = [next(f) for _ in range(count)]
        paths[name] = str(folder / f"{name}.jsonl")
        with open(paths[name], "w") as f:
            f.writelines(lines)
    return paths


TINY = ["--units", "8", "--ir-size", "8", "--batch-size", "4", "--seed", "0"]


# ---------------------------------------------------------------------- #
# train -> evaluate -> stream, end to end.
# ---------------------------------------------------------------------- #
def test_train_evaluate_stream_end_to_end(cli_data, tmp_path):
    out = str(tmp_path / "model.keras")
    result = invoke(["train", cli_data["train"], "--valid", cli_data["valid"], "-o", out,
                     "--epochs", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert "Epoch 1/2" in result.stdout and "Epoch 2/2" in result.stdout  # Keras' bar
    match = re.search(r"saved (.+): the best of 2 epochs \(epoch (\d), val_loss (\S+)\)\n$",
                      result.stdout)
    assert match and match.group(1) == out

    # The file holds the best epoch's model: its val_loss is the one reported.
    model = keras.models.load_model(out, compile=False)
    assert (model.input_size, model.output_size, model.units, model.ir_size) == (3, 2, 8, 8)
    model.compile(optimizer="adam")
    valid = sg.make_dataset(*sg.load_jsonl(cli_data["valid"]), 4, shuffle=False)
    loss = model.evaluate(valid, verbose=0, return_dict=True)["loss"]
    assert float(match.group(3)) == pytest.approx(loss, rel=1e-4)

    evaluated = invoke(["evaluate", cli_data["valid"], "--model", out])
    assert evaluated.exit_code == 0 and evaluated.stderr == ""
    metrics = json.loads(evaluated.stdout)
    assert set(metrics) == {"length_accuracy", "length_mae", "frame_mse"}
    assert 0 <= metrics["length_accuracy"] <= 1 and metrics["frame_mse"] >= 0

    with open(os.path.join(SAMPLES, "inputs.txt"), "rb") as f:
        streamed = invoke(["stream", "--model", out], f.read())
    assert streamed.exit_code == 0 and streamed.stderr == ""
    lines = streamed.stdout.splitlines()
    assert len(lines) == 64  # 5 sequences of 12 steps, 4 blank lines between
    assert all(len(frame) == 2 for line in lines if line for frame in json.loads(line))


def test_train_without_valid_saves_at_the_end(cli_data, tmp_path):
    out = str(tmp_path / "m.keras")
    result = invoke(["train", cli_data["valid"], "-o", out, "--epochs", "1",
                     "--cell", "lstm", "--decoder-state", "carry", "--max-steps", "9",
                     "--frame-loss", "mae", "--stop-pos-weight", "2", "--learning-rate", "0.01",
                     *TINY])
    assert result.exit_code == 0, result.output
    assert re.search(rf"saved {re.escape(out)} \(1 epoch, loss \S+\)\n$", result.stdout)
    model = keras.models.load_model(out, compile=False)
    assert (model.cell, model.decoder_state, model.frame_loss, model.stop_pos_weight) == (
        "lstm", "carry", "mae", 2.0)


@pytest.fixture
def interrupt_fit(monkeypatch):
    """Makes `fit` run `epochs_before` epochs, then raise KeyboardInterrupt."""
    def install(epochs_before):
        def fit(self, *args, **kwargs):
            if epochs_before:
                keras.Model.fit(self, *args, **{**kwargs, "epochs": epochs_before})
            raise KeyboardInterrupt

        monkeypatch.setattr(sg.StreamGen, "fit", fit, raising=False)
    return install


def test_train_ctrl_c_before_an_epoch_saves_the_model(cli_data, tmp_path, interrupt_fit):
    interrupt_fit(0)
    out = str(tmp_path / "m.keras")
    result = invoke(["train", cli_data["valid"], "-o", out, *TINY])
    assert result.exit_code == 130
    assert result.stderr == f"streamgen: interrupted after 0 epochs; saved the model to {out}\n"
    assert isinstance(keras.models.load_model(out, compile=False), sg.StreamGen)


def test_train_ctrl_c_keeps_the_best_with_valid(cli_data, tmp_path, interrupt_fit):
    interrupt_fit(1)
    out = str(tmp_path / "m.keras")
    result = invoke(["train", cli_data["valid"], "--valid", cli_data["valid"], "-o", out,
                     "--epochs", "5", *TINY])
    assert result.exit_code == 130
    assert re.fullmatch(
        rf"streamgen: interrupted after 1 epoch; the best model so far \(epoch 1, "
        rf"val_loss \S+\) is in {re.escape(out)}\n", result.stderr)
    assert isinstance(keras.models.load_model(out, compile=False), sg.StreamGen)


@pytest.mark.parametrize("line, field", [
    ('{"x": [[1, 2, 3]], "y": [[[1, 2]], []]}\n', "field 'y'"),
    ('{"x": [[1, 2, 3]], "y": [[[1, 2]]]\n', "bad JSON"),
    ('{"x": [[1, 2, "a"]], "y": [[[1, 2]]]}\n', "field 'x"),
])
def test_train_malformed_record_is_one_runtime_line(cli_data, tmp_path, line, field):
    path = tmp_path / "bad.jsonl"
    with open(cli_data["valid"]) as f:
        path.write_text(f.readline() + line)
    result = invoke(["train", str(path), "-o", str(tmp_path / "m.keras")])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith(f"streamgen: error: {path}:2: ")
    assert field in result.stderr and result.stderr.count("\n") == 1
    assert not os.path.exists(tmp_path / "m.keras")


def test_train_valid_with_other_widths(cli_data, tmp_path):
    path = tmp_path / "wide.jsonl"
    path.write_text('{"x": [[1, 2, 3, 4]], "y": [[[1, 2]]]}\n')
    result = invoke(["train", cli_data["valid"], "--valid", str(path),
                     "-o", str(tmp_path / "m.keras")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"streamgen: error: {path}:1: ")
    assert "input_size=3" in result.stderr


def test_train_data_without_frames(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"x": [[1, 2, 3]], "y": [[]]}\n')
    result = invoke(["train", str(path), "-o", str(tmp_path / "m.keras")])
    assert result.exit_code == 1
    assert result.stderr == f"streamgen: error: {path}: no frames at all, so output_size is unknown\n"


@pytest.mark.parametrize("args, error", [
    (["-o", "m.h5"], "Invalid value for '--output' / '-o': 'm.h5' does not end in .keras."),
    (["-o", "no/such/folder/m.keras"],
     "Invalid value for '--output' / '-o': the folder 'no/such/folder' does not exist."),
    ([], "Missing option '--output' / '-o'."),
    (["-o", "m.keras", "--epochs", "0"], "Invalid value for '--epochs': 0 is not in the range x>=1."),
    (["-o", "m.keras", "--cell", "rnn"],
     "Invalid value for '--cell': 'rnn' is not one of 'gru', 'lstm', 'simple_rnn'."),
    (["-o", "m.keras", "--learning-rate", "0"],
     "Invalid value for '--learning-rate': 0.0 is not in the range x>0."),
    (["-o", "m.keras", "--valid", "missing.jsonl"],
     "Invalid value for '--valid': File 'missing.jsonl' does not exist."),
])
def test_train_usage_errors(cli_data, args, error):
    result = invoke(["train", cli_data["valid"], *args])
    assert result.exit_code == 2
    assert result.stderr == usage("train", error, " DATA")


def test_train_missing_data_file():
    result = invoke(["train", "missing.jsonl", "-o", "m.keras"])
    assert result.exit_code == 2
    assert result.stderr == usage("train", "Invalid value for 'DATA': File 'missing.jsonl' "
                                           "does not exist.", " DATA")


# ---------------------------------------------------------------------- #
# evaluate
# ---------------------------------------------------------------------- #
def rounded(metrics):
    return {k: None if np.isnan(v) else float(f"{v:.6g}") for k, v in metrics.items()}


@pytest.mark.parametrize("args, stop", [
    ([], None),
    (["--stop", "none"], []),
    (["--stop", "head", "--threshold", "0.9"], [sg.StopHead(0.9)]),
])
def test_evaluate_matches_library(cli_data, cli_model_path, cli_model, args, stop):
    result = invoke(["evaluate", cli_data["valid"], "--model", cli_model_path, *args])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.count("\n") == 1  # one JSON object, one line
    inputs, targets = sg.load_jsonl(cli_data["valid"])
    assert json.loads(result.stdout) == rounded(sg.evaluate(cli_model, inputs, targets, stop=stop))


def test_evaluate_default_model(cli_data):
    result = invoke(["evaluate", cli_data["valid"]])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["length_accuracy"] >= 0.9  # the trained, bundled model


def test_evaluate_without_frames_prints_null(cli_model_path, tmp_path):
    path = tmp_path / "lengths0.jsonl"
    path.write_text('{"x": [[1, 2, 3], [0, 0, 0]], "y": [[], []]}\n')
    result = invoke(["evaluate", str(path), "--model", cli_model_path])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["frame_mse"] is None
    assert "NaN" not in result.stdout


def test_evaluate_data_of_another_width(tmp_path):
    path = tmp_path / "wide.jsonl"
    path.write_text('{"x": [[1, 2, 3, 4]], "y": [[[1, 2]]]}\n')
    result = invoke(["evaluate", str(path)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith(f"streamgen: error: {path}:1: ")
    assert "input_size=3" in result.stderr and result.stderr.count("\n") == 1


def test_evaluate_unreadable_data(tmp_path):
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    result = invoke(["evaluate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"streamgen: error: {path}:1: not valid UTF-8")


def test_evaluate_empty_data(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    result = invoke(["evaluate", str(path)])
    assert result.exit_code == 1
    assert result.stderr == f"streamgen: error: {path}: no sequences\n"


def test_evaluate_data_is_a_folder(tmp_path):
    result = invoke(["evaluate", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == usage("evaluate", f"Invalid value for 'DATA': File '{tmp_path}' "
                                              "is a directory.", " DATA")


# ---------------------------------------------------------------------- #
# info
# ---------------------------------------------------------------------- #
def test_info_text(cli_model_path, cli_model):
    result = invoke(["info", "--model", cli_model_path])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == (
        f"model          {cli_model_path}\n"
        "input_size     3\n"
        "output_size    2\n"
        "ir_size        8\n"
        "outer cell     GRUCell(8)\n"
        "inner cell     GRUCell(8)\n"
        "max_steps      9\n"
        "decoder_state  reset\n"
        "stop           StopHead(threshold=0.5)\n"
        "frame_loss     mse\n"
        f"parameters     {cli_model.count_params():,}\n"
    )


def test_info_json(tmp_path):
    path = str(tmp_path / "m.keras")
    model = sg.StreamGen(3, 4, ir_size=None, units=5, cell="lstm", max_steps=6,
                         decoder_state="carry", stop=[sg.StopHead(0.7), sg.L2Norm(2.0, "below")])
    model.save(path)
    result = invoke(["info", "--model", path, "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "model": path, "input_size": 3, "output_size": 4, "ir_size": None,
        "outer_cell": {"class": "LSTMCell", "units": 5},
        "inner_cell": {"class": "LSTMCell", "units": 5},
        "max_steps": 6, "decoder_state": "carry",
        "stop": [{"class": "StopHead", "threshold": 0.7},
                 {"class": "L2Norm", "threshold": 2.0, "mode": "below"}],
        "frame_loss": "mse", "parameters": model.count_params(),
    }
    text = invoke(["info", "--model", path]).stdout
    assert "stop           StopHead(threshold=0.7), L2Norm(threshold=2.0, mode='below')\n" in text
    assert "ir_size        none\n" in text


def test_info_default_model():
    result = invoke(["info", "--json"])
    facts = json.loads(result.stdout)
    assert facts["model"] == "default"
    assert (facts["input_size"], facts["output_size"], facts["max_steps"]) == (3, 2, 9)


# ---------------------------------------------------------------------- #
# plot
# ---------------------------------------------------------------------- #
INPUTS = os.path.join(SAMPLES, "inputs.txt")


@pytest.mark.parametrize("args, extension, magic", [
    ([], "png", b"\x89PNG"),
    (["--sequence", "2", "--stop", "none", "--max-steps", "3"], "svg", b"<?xml"),
])
def test_plot_writes_an_image(cli_model_path, cli_model, tmp_path, args, extension, magic):
    out = tmp_path / f"fig.{extension}"
    result = invoke(["plot", INPUTS, "--model", cli_model_path, "-o", str(out), *args])
    assert result.exit_code == 0 and result.stderr == ""
    assert out.read_bytes().startswith(magic)
    sequence = 2 if args else 1
    with open(INPUTS) as f:
        blocks = f.read().split("\n\n")
    rows = [[float(v) for v in line.split()] for line in blocks[sequence - 1].splitlines()
            if line and not line.startswith("#")]
    options = dict(stop=[], max_steps=3) if args else {}
    stream = cli_model.open_stream(**options)
    lengths = " ".join(str(len(stream.step(np.array(r, np.float32)))) for r in rows)
    assert result.stdout == f"wrote {out}: {len(rows)} outer steps, lengths {lengths}\n"


def test_plot_draws_segments_and_stop_marks():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    from streamgen.cli.commands_plot import draw

    outs = [np.ones((2, 2)), np.zeros((0, 2)), np.ones((3, 2))]
    figure = draw(pyplot, outs, cap=3, output_size=2, title="t")
    axes = figure.axes
    assert len(axes) == 2  # one panel per channel
    lines = axes[0].get_lines()
    segments = [l for l in lines if l.get_marker() == "o"]
    stops = [l for l in lines if l.get_marker() == "x"]
    assert [len(l.get_xdata()) for l in segments] == [2, 3]
    np.testing.assert_allclose(segments[1].get_xdata(), [2, 2 + 0.8 / 3, 2 + 1.6 / 3])
    # STOP after Out[0] (length 2 < cap 3) and at Out[1] (length 0); none at the cap.
    np.testing.assert_allclose([l.get_xdata()[0] for l in stops], [0 + 1.6 / 3, 1])
    pyplot.close(figure)


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke(["plot", INPUTS, "-o", str(tmp_path / "f.png")])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == 'streamgen: error: plot needs matplotlib: pip install "streamgen[plot]"\n'


def test_plot_errors(cli_model_path, tmp_path):
    base = ["plot", INPUTS, "--model", cli_model_path]
    result = invoke([*base, "-o", str(tmp_path / "f.xyz")])
    assert result.exit_code == 2
    assert "Error: Invalid value for '--output' / '-o': unknown image format 'xyz'; use one of " \
        in result.stderr
    result = invoke([*base, "-o", str(tmp_path / "f.png"), "--sequence", "9"])
    assert result.exit_code == 2
    assert result.stderr.endswith(
        f"Error: Invalid value for '--sequence': 9, but {INPUTS} holds 5 sequences.\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n1 2\n")
    result = invoke(["plot", str(bad), "--model", cli_model_path, "-o", str(tmp_path / "f.png")])
    assert (result.exit_code, result.stderr) == (
        1, f"streamgen: error: {bad}:2: expected 3 numbers, got 2\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    result = invoke(["plot", str(empty), "--model", cli_model_path, "-o", str(tmp_path / "f.png")])
    assert (result.exit_code, result.stderr) == (1, f"streamgen: error: {empty}: no input vectors\n")
    result = invoke([*base, "-o", str(tmp_path / "no" / "f.png")])
    assert result.exit_code == 1
    assert result.stderr == f"streamgen: error: {tmp_path / 'no' / 'f.png'}: No such file or directory\n"
    assert not (tmp_path / "f.png").exists()


# ---------------------------------------------------------------------- #
# export (and stream on the export)
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("args, error", [
    (["-o", "m.keras"], "Invalid value for '--output' / '-o': 'm.keras' does not end in .tflite."),
    (["-o", "no/such/m.tflite"], "Invalid value for '--output' / '-o': the folder 'no/such' does not exist."),
    (["--format", "onnx", "-o", "m.tflite"],
     "Invalid value for '--format': 'onnx' is not 'litert'."),
])
def test_export_usage_errors(args, error):
    result = invoke(["export", *args])
    assert result.exit_code == 2
    assert result.stderr == usage("export", error)


def test_export_then_stream_the_export(cli_tflite, cli_model):
    rows = np.round(np.random.default_rng(2).normal(size=(5, 3)), 4)
    data = "".join(" ".join(map(str, row)) + "\n" for row in rows)
    result = invoke(["stream", "--model", cli_tflite, "--max-steps", "4"], data)
    assert result.exit_code == 0 and result.stderr == ""
    stream = cli_model.open_stream(max_steps=4)
    for line, row in zip(result.stdout.splitlines(), rows, strict=True):
        expected = stream.step(row.astype(np.float32))
        assert len(json.loads(line)) == len(expected)


def test_export_with_other_stop_criteria(cli_model_path, tmp_path):
    path = str(tmp_path / "none.tflite")
    result = invoke(["export", "--model", cli_model_path, "--stop", "none", "-o", path])
    assert result.exit_code == 0
    streamed = invoke(["stream", "--model", path], "1 2 3\n0 0 0\n")
    assert [len(json.loads(line)) for line in streamed.stdout.splitlines()] == [9, 9]


@pytest.mark.parametrize("args, error", [
    (["--stop", "l2"], "Invalid value for '--stop': {path} was exported with the stop criteria "
                       "[StopHead]; a .tflite model can only change their thresholds (export it "
                       "again with 'streamgen export --stop ...')."),
    (["--max-steps", "10"], "Invalid value for '--max-steps': 10 is above the model's trained "
                            "cap of 9 (--max-steps may only lower it)."),
    (["--threshold", "2"], "Invalid value for '--threshold': 2 is not a probability in [0, 1] "
                           "(needed by --stop head)."),
])
def test_stream_tflite_usage_errors(cli_tflite, args, error):
    result = invoke(["stream", "--model", cli_tflite, *args], "")
    assert result.exit_code == 2
    assert result.stderr == usage("stream", error.format(path=cli_tflite), " [INPUT]")


def test_stream_tflite_that_is_not_an_export(tmp_path, cli_model_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(open(cli_model_path, "rb").read())
    result = invoke(["stream", "--model", str(path)], "")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (f"streamgen: error: {path}: not a streamgen LiteRT export "
                             "(write one with 'streamgen export --format litert')\n")


def test_tflite_only_streams(cli_tflite):
    result = invoke(["info", "--model", cli_tflite])
    assert result.exit_code == 2
    assert result.stderr == usage(
        "info", f"Invalid value for '--model': expected a .keras model file, got '{cli_tflite}'.")
