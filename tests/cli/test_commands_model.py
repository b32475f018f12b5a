"""`streamgen train`, `evaluate`, `info`, `plot`, `export` through `CliRunner`."""

import gc
import json
import os
import re
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import streamgen as sg
from streamgen.cli import common
from streamgen.cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
@pytest.mark.slow  # trains a model
def test_train_evaluate_stream_end_to_end(cli_data, tmp_path):
    out = str(tmp_path / "model.keras")
    result = invoke(["train", cli_data["train"], "--valid", cli_data["valid"], "-o", out,
                     "--epochs", "2", *TINY])
    assert result.exit_code == 0, result.output
    # Not a terminal: one plain line per epoch, no progress-bar characters.
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and result.stderr == ""
    for epoch, line in enumerate(lines[:2], 1):
        assert re.fullmatch(rf"epoch {epoch}/2: loss \S+ frame_loss \S+ stop_accuracy \S+ "
                            r"stop_loss \S+ val_frame_loss \S+ val_loss \S+ "
                            r"val_stop_accuracy \S+ val_stop_loss \S+ \(\d+\.\d s\)", line)
    assert not set(result.stdout) & set("\r\x08\x1b━")
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


@pytest.mark.slow  # trains a model
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


@pytest.mark.slow  # trains a model
def test_train_ctrl_c_before_an_epoch_saves_the_model(cli_data, tmp_path, interrupt_fit):
    interrupt_fit(0)
    out = str(tmp_path / "m.keras")
    result = invoke(["train", cli_data["valid"], "-o", out, *TINY])
    assert result.exit_code == 130
    assert result.stderr == f"streamgen: interrupted after 0 epochs; saved the model to {out}\n"
    assert isinstance(keras.models.load_model(out, compile=False), sg.StreamGen)


@pytest.mark.slow  # trains a model
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
@pytest.mark.slow  # trains a model
def test_train_malformed_record_is_one_runtime_line(cli_data, tmp_path, line, field):
    path = tmp_path / "bad.jsonl"
    with open(cli_data["valid"]) as f:
        path.write_text(f.readline() + line)
    result = invoke(["train", str(path), "-o", str(tmp_path / "m.keras")])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith(f"streamgen: error: {path}:2: ")
    assert field in result.stderr and result.stderr.count("\n") == 1
    assert not os.path.exists(tmp_path / "m.keras")


@pytest.mark.slow  # trains a model
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
    # Non-finite and out-of-range numbers (issue 11, item 3).
    (["-o", "m.keras", "--learning-rate", "nan"],
     "Invalid value for '--learning-rate': 'nan' is not a finite number."),
    (["-o", "m.keras", "--learning-rate", "inf"],
     "Invalid value for '--learning-rate': 'inf' is not a finite number."),
    (["-o", "m.keras", "--learning-rate", "-1e-3"],
     "Invalid value for '--learning-rate': -0.001 is not in the range x>0."),
    (["-o", "m.keras", "--stop-pos-weight", "nan"],
     "Invalid value for '--stop-pos-weight': 'nan' is not a finite number."),
    (["-o", "m.keras", "--stop-loss-weight", "-inf"],
     "Invalid value for '--stop-loss-weight': '-inf' is not a finite number."),
    (["-o", "m.keras", "--stop-loss-weight", "-1"],
     "Invalid value for '--stop-loss-weight': -1.0 is not in the range x>=0."),
    (["-o", "m.keras", "--seed", "-1"],
     "Invalid value for '--seed': -1 is not in the range 0<=x<=4294967295."),
    (["-o", "m.keras", "--seed", "4294967296"],
     "Invalid value for '--seed': 4294967296 is not in the range 0<=x<=4294967295."),
    (["-o", "m.keras", "--patience", "0"],
     "Invalid value for '--patience': 0 is not in the range x>=1."),
    (["-o", "m.keras", "--stop", "head", "--threshold", "2"],
     "Invalid value for '--threshold': 2 is not a probability in [0, 1] (needed by --stop head)."),
    (["-o", "m.keras", "--stop", "l2-below", "--threshold", "-1"],
     "Invalid value for '--threshold': -1 is negative (--stop l2-below needs a norm >= 0)."),
    (["-o", "m.keras", "--threshold", "nan"], "Invalid value for '--threshold': nan is not a threshold."),
])
def test_train_usage_errors(cli_data, args, error):
    result = invoke(["train", cli_data["valid"], *args])
    assert result.exit_code == 2
    assert result.stderr == usage("train", error, " DATA")


def unwritable_folder(tmp_path):
    """A folder in which no file can be created, even by root."""
    if os.geteuid() == 0:
        return "/sys"  # sysfs refuses new files to everyone
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    return str(folder)


@pytest.mark.parametrize("command", ["train", "export"])
def test_output_paths_are_checked_before_any_work(cli_data, tmp_path, monkeypatch, command):
    """Issue 11, item 2: -o is refused before the first epoch (and before
    the model is even loaded), as a usage error."""
    extension = ".keras" if command == "train" else ".tflite"
    folder = tmp_path / f"folder{extension}"
    folder.mkdir()
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    unwritable = unwritable_folder(tmp_path)
    cases = [
        (str(folder), f"{str(folder)!r} is a folder."),
        (str(tmp_path / "missing" / f"m{extension}"),
         f"the folder {str(tmp_path / 'missing')!r} does not exist."),
        (str(not_a_folder / f"m{extension}"), f"the folder {str(not_a_folder)!r} is not a folder."),
        (os.path.join(unwritable, f"m{extension}"),
         f"cannot write in the folder {unwritable!r} (Permission denied)."),
    ]
    monkeypatch.setattr(sg.StreamGen, "fit", lambda *a, **k: pytest.fail("trained"),
                        raising=False)
    for path, error in cases:
        args = [cli_data["valid"]] if command == "train" else []
        result = invoke([command, *args, "-o", path])
        assert (result.exit_code, result.stdout) == (2, ""), path
        assert result.stderr == usage(command, f"Invalid value for '--output' / '-o': {error}",
                                      " DATA" if command == "train" else "")
    assert os.listdir(folder) == [] and sorted(os.listdir(tmp_path)) == sorted(
        [folder.name, not_a_folder.name])  # no probe or temporary file left


# ---------------------------------------------------------------------- #
# train: divergence (issue 11, item 3), write errors (item 4).
# ---------------------------------------------------------------------- #
@pytest.mark.slow  # trains a model
def test_train_divergence_is_a_failure_and_saves_nothing(cli_data, tmp_path):
    out = tmp_path / "m.keras"
    result = invoke(["train", cli_data["valid"], "-o", str(out), "--epochs", "2",
                     "--learning-rate", "1e30", *TINY])
    assert result.exit_code == 1
    assert re.fullmatch(
        r"streamgen: error: training diverged: the loss became NaN or infinite at epoch 1, "
        rf"batch \d+ \(try a lower --learning-rate\); no model was saved \({re.escape(str(out))} "
        r"was not written\)\n", result.stderr)
    assert "saved" not in result.stdout and "epoch 2/2" not in result.stdout  # stopped at once
    assert not out.exists()


@pytest.mark.slow  # trains a model
def test_train_divergence_with_valid_leaves_the_old_file(cli_data, tmp_path):
    out = tmp_path / "m.keras"
    out.write_bytes(b"the previous model")
    result = invoke(["train", cli_data["valid"], "--valid", cli_data["valid"], "-o", str(out),
                     "--epochs", "2", "--learning-rate", "1e30", *TINY])
    assert result.exit_code == 1
    assert result.stderr.endswith(f"; no model was saved ({out} was left as it was)\n")
    assert out.read_bytes() == b"the previous model"
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary file either


def test_divergence_message_names_the_best_model_before_it():
    from streamgen.cli.commands_model import _Run

    run = _Run("m.keras", 5, dict)
    run.best, run.diverged = (1, 0.25), ("loss", 3, 6)
    assert run.divergence_message() == (
        "training diverged: the loss became NaN or infinite at epoch 4, batch 7 (try a lower "
        "--learning-rate); the best model before it (epoch 2, val_loss 0.25) is in m.keras")


@pytest.mark.slow  # trains a model
def test_train_save_error_is_one_line(cli_data, tmp_path, monkeypatch):
    import errno

    from streamgen import saving

    def full(model, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saving, "save_model", full)
    out = tmp_path / "m.keras"
    result = invoke(["train", cli_data["valid"], "-o", str(out), "--epochs", "1", "-q", *TINY])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (f"streamgen: error: cannot save {out}: No space left on device; "
                             f"{out} was not written\n")


# ---------------------------------------------------------------------- #
# train: every model write is atomic (issue 11, item 1).
# ---------------------------------------------------------------------- #
def interrupting_save(monkeypatch, call, line):
    """Makes the `call`-th `StreamGen.save` raise KeyboardInterrupt at its
    `line`-th traced Python line: as a Ctrl-C landing inside the write.
    Returns a dict whose "lines" holds each call's count of lines (if not
    interrupted) and "hit" whether the interrupt was raised."""
    original = sg.StreamGen.save
    seen = {"calls": 0, "lines": [], "hit": False}

    def save(self, *args, **kwargs):
        seen["calls"] += 1
        count = [0]

        def trace(frame, event, arg):
            if event == "line":
                count[0] += 1
                if seen["calls"] == call and count[0] == line:
                    seen["hit"] = True
                    raise KeyboardInterrupt
            return trace

        sys.settrace(trace)
        try:
            return original(self, *args, **kwargs)
        finally:
            sys.settrace(None)
            seen["lines"].append(count[0])

    monkeypatch.setattr(sg.StreamGen, "save", save)
    return seen


@pytest.mark.slow  # trains a model
# An interrupt injected inside Keras's zip writing leaves its `ZipFile` to the
# garbage collector, whose `__del__` then finds its file closed ("Exception
# ignored"): an artefact of the injection, collected here (once, at the end:
# a full collection takes ~1 s in a worker that has run hundreds of tests),
# not later in whichever test happens to run.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_interrupt_at_any_point_of_a_save_leaves_the_old_file_or_none(tmp_path, monkeypatch):
    """`saving.save_model`, interrupted at 12 points spread over the write:
    the target is always absent (first save) or the previous, loadable model."""
    from streamgen import saving

    from helpers import make_model

    model = make_model(seed=4)
    first = make_model(seed=5)
    out = tmp_path / "m.keras"
    seen = interrupting_save(monkeypatch, call=0, line=0)  # measure only
    for _ in range(2):
        saving.save_model(model, out)
        saving.save_model(first, out)
    total = min(seen["lines"][1:])  # the first save of a model does more
    assert total > 100  # the write runs enough Python to be interrupted inside
    os.remove(out)
    monkeypatch.undo()
    for previous in (None, first):
        for line in np.linspace(1, total, 12).astype(int):
            if out.exists():
                os.remove(out)
            if previous is not None:
                monkeypatch.undo()
                saving.save_model(previous, out)
            seen = interrupting_save(monkeypatch, call=1, line=int(line))
            with pytest.raises(KeyboardInterrupt):
                saving.save_model(model, out)
            assert seen["hit"]
            assert os.listdir(tmp_path) == ([] if previous is None else ["m.keras"]), line
            if previous is not None:
                loaded = keras.models.load_model(out, compile=False)
                for got, want in zip(loaded.get_weights(), previous.get_weights()):
                    np.testing.assert_array_equal(got, want)
            monkeypatch.undo()
    gc.collect()


@pytest.mark.slow  # trains a model
def test_train_interrupted_inside_a_checkpoint_write(cli_data, tmp_path, monkeypatch):
    """Ctrl-C in the middle of the second checkpoint: the file still holds
    epoch 1's model, complete, and the message says so."""
    out = tmp_path / "m.keras"
    seen = interrupting_save(monkeypatch, call=2, line=200)
    result = invoke(["train", cli_data["valid"], "--valid", cli_data["valid"], "-o", str(out),
                     "--epochs", "4", "--learning-rate", "0.01", *TINY])
    assert seen["hit"] and result.exit_code == 130
    match = re.fullmatch(r"streamgen: interrupted after \d epochs; the best model so far "
                         rf"\(epoch \d, val_loss (\S+)\) is in {re.escape(str(out))}\n",
                         result.stderr)
    assert match, result.stderr
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m.keras"]
    model = keras.models.load_model(out, compile=False)
    model.compile(optimizer="adam")
    valid = sg.make_dataset(*sg.load_jsonl(cli_data["valid"]), 4, shuffle=False)
    loss = model.evaluate(valid, verbose=0, return_dict=True)["loss"]
    assert float(match.group(1)) == pytest.approx(loss, rel=1e-4)


# ---------------------------------------------------------------------- #
# train: options for the saved model, early stopping, output (item 15).
# ---------------------------------------------------------------------- #
@pytest.mark.slow  # trains a model
def test_train_saves_stop_criteria_and_loss_weight(cli_data, tmp_path):
    out = tmp_path / "m.keras"
    result = invoke(["train", cli_data["valid"], "-o", str(out), "--epochs", "1",
                     "--stop", "l2-below", "--threshold", "0.2", "--stop-loss-weight", "0.5",
                     *TINY])
    assert result.exit_code == 0, result.output
    model = keras.models.load_model(out, compile=False)
    assert [(type(c).__name__, c.get_config()) for c in model.stop] == [
        ("L2Norm", {"threshold": 0.2, "mode": "below"})]
    assert model.stop_loss_weight == 0.5
    info = invoke(["info", "--model", str(out)]).stdout
    assert "stop           L2Norm(threshold=0.2, mode='below')\n" in info


@pytest.mark.slow  # trains a model
def test_train_patience_stops_early(cli_data, tmp_path):
    # A learning rate too small to move float32 weights: val_loss never improves.
    out = tmp_path / "m.keras"
    result = invoke(["train", cli_data["valid"], "--valid", cli_data["valid"], "-o", str(out),
                     "--epochs", "20", "--patience", "2", "--learning-rate", "1e-20", *TINY])
    assert result.exit_code == 0, result.output
    assert re.search(r"saved .+: the best of 3 epochs \(epoch 1, val_loss \S+; stopped early, "
                     r"val_loss had not improved for 2 epochs\)\n$", result.stdout)


@pytest.mark.slow  # trains a model
def test_train_quiet_prints_only_the_result(cli_data, tmp_path):
    out = tmp_path / "m.keras"
    result = invoke(["train", cli_data["valid"], "-o", str(out), "--epochs", "2", "--quiet",
                     *TINY])
    assert result.exit_code == 0 and result.stderr == ""
    assert re.fullmatch(rf"saved {re.escape(str(out))} \(2 epochs, loss \S+\)\n", result.stdout)


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


def test_evaluate_data_of_another_width(tmp_path, cli_model_path):
    path = tmp_path / "wide.jsonl"
    path.write_text('{"x": [[1, 2, 3, 4]], "y": [[[1, 2]]]}\n')
    result = invoke(["evaluate", str(path)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith(f"streamgen: error: {path}:1: ")
    assert "input_size=3" in result.stderr and result.stderr.count("\n") == 1
    # --model forgotten: the message says that the bundled model was used.
    assert result.stderr.endswith(
        "(input_size=3) (that is the bundled model's size: no --model was given)\n")
    result = invoke(["evaluate", str(path), "--model", cli_model_path])
    assert result.exit_code == 1 and "bundled" not in result.stderr


def test_evaluate_tflite_matches_the_keras_model(cli_data, cli_tflite, cli_model):
    """A .tflite export is evaluated through its runtime, without TensorFlow's
    decode: the same lengths, and frame_mse to float32 round-off."""
    inputs, targets = sg.load_jsonl(cli_data["valid"])
    for args, stop in (([], None), (["--threshold", "0.8"], [sg.StopHead(0.8)])):
        result = invoke(["evaluate", cli_data["valid"], "--model", cli_tflite, *args])
        assert result.exit_code == 0 and result.stderr == ""
        got = json.loads(result.stdout)
        expected = sg.evaluate(cli_model, inputs, targets, stop=stop)
        assert got["length_accuracy"] == pytest.approx(expected["length_accuracy"], rel=1e-5)
        assert got["length_mae"] == pytest.approx(expected["length_mae"], rel=1e-5)
        assert got["frame_mse"] == pytest.approx(expected["frame_mse"], rel=1e-4)


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
        "sampler        Greedy()\n"
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
    runtime = sg.open_runtime(model)
    assert json.loads(result.stdout) == {
        "model": path, "input_size": 3, "output_size": 4, "ir_size": None,
        "outer_cell": {"class": "LSTMCell", "units": 5},
        "inner_cell": {"class": "LSTMCell", "units": 5},
        "max_steps": 6, "decoder_state": "carry",
        "stop": [{"class_name": "StopHead", "config": {"threshold": 0.7}},
                 {"class_name": "L2Norm", "config": {"threshold": 2.0, "mode": "below"}}],
        "frame_loss": "mse", "sampler": {"class_name": "Greedy", "config": {}},
        "parameters": model.count_params(),
        "state_sizes": {"outer": [5, 5], "inner": [5, 5]}, "state_size": 24,
        "fingerprint": runtime.fingerprint, "runtime": "TFRuntime",
    }
    text = invoke(["info", "--model", path]).stdout
    assert "stop           StopHead(threshold=0.7), L2Norm(threshold=2.0, mode='below')\n" in text
    assert "ir_size        none\n" in text


def test_info_tflite(cli_tflite):
    import streamgen.runtimes.lite

    runtime = streamgen.runtimes.lite.LiteRuntime(cli_tflite)
    result = invoke(["info", "--model", cli_tflite])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == (
        f"model          {cli_tflite}\n"
        "format         litert\n"
        "input_size     3\n"
        "output_size    2\n"
        "cell           gru\n"
        "max_steps      9\n"
        "decoder_state  reset\n"
        "stop           StopHead(threshold=0.5)\n"
        "sampler        Greedy()\n"
        "frame_loss     mse\n"
        f"state_size     {runtime.state_size}\n"
        f"fingerprint    {runtime.fingerprint}\n"
        f"bytes          {os.path.getsize(cli_tflite):,}\n"
    )
    facts = json.loads(invoke(["info", "--model", cli_tflite, "--json"]).stdout)
    assert facts["format"] == "litert" and facts["stop"] == [
        {"class_name": "StopHead", "config": {"threshold": 0.5}}]
    assert facts["bytes"] == os.path.getsize(cli_tflite)


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


def test_plot_tflite_gives_the_lengths_of_the_keras_model(cli_model_path, cli_tflite, tmp_path):
    keras_result = invoke(["plot", INPUTS, "--model", cli_model_path, "-o", str(tmp_path / "k.png"),
                           "--sequence", "3"])
    lite_result = invoke(["plot", INPUTS, "--model", cli_tflite, "-o", str(tmp_path / "l.png"),
                          "--sequence", "3"])
    assert keras_result.exit_code == lite_result.exit_code == 0
    assert lite_result.stdout.split(": ", 1)[1] == keras_result.stdout.split(": ", 1)[1]
    assert (tmp_path / "l.png").read_bytes().startswith(b"\x89PNG")


def test_plot_width_mismatch_names_the_bundled_model(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_text("1 2 3 4\n")
    result = invoke(["plot", str(path), "-o", str(tmp_path / "f.png")])
    assert result.exit_code == 1
    assert result.stderr == (f"streamgen: error: {path}:1: expected 3 numbers, got 4 (that is "
                             "the bundled model's size: no --model was given)\n")


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
    assert result.stderr == ('streamgen: error: plot needs matplotlib: pip install matplotlib '
                             '(or, in a streamgen checkout, pip install -e ".[plot]")\n')


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


@pytest.mark.slow  # a LiteRT conversion (~4 s)
def test_export_with_other_stop_criteria(cli_model_path, tmp_path):
    path = str(tmp_path / "none.tflite")
    result = invoke(["export", "--model", cli_model_path, "--stop", "none", "-o", path])
    assert result.exit_code == 0
    streamed = invoke(["stream", "--model", path], "1 2 3\n0 0 0\n")
    assert [len(json.loads(line)) for line in streamed.stdout.splitlines()] == [9, 9]


@pytest.mark.parametrize("args, error", [
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
                             "(write one with model.export_litert(path) or 'streamgen export')\n")


def test_export_needs_a_keras_model(cli_tflite):
    result = invoke(["export", "--model", cli_tflite, "-o", "m.tflite"])
    assert result.exit_code == 2
    assert result.stderr == usage(
        "export", f"Invalid value for '--model': expected a .keras model file, got '{cli_tflite}'.")


# ---------------------------------------------------------------------- #
# L2Norm's mode from the command line (issue 11, item 15).
# ---------------------------------------------------------------------- #
def test_stop_spec_l2_modes():
    below = [{"class_name": "L2Norm", "config": {"threshold": 0.7, "mode": "below"}}]
    head = [{"class_name": "StopHead", "config": {"threshold": 0.5}}]
    spec = common.stop_spec
    # l2 keeps the model's mode and threshold; l2-above / l2-below choose.
    assert spec(below, "l2", None) == below
    assert spec(below, None, 0.2) == [
        {"class_name": "L2Norm", "config": {"threshold": 0.2, "mode": "below"}}]
    assert spec(below, "l2-above", None) == [
        {"class_name": "L2Norm", "config": {"threshold": 3.0, "mode": "above"}}]
    assert spec(head, "l2-below", 0.1) == [
        {"class_name": "L2Norm", "config": {"threshold": 0.1, "mode": "below"}}]
    assert spec(head, "l2", None) == [
        {"class_name": "L2Norm", "config": {"threshold": 3.0, "mode": "above"}}]


@pytest.mark.parametrize("command", ["stream", "evaluate", "plot", "export"])
def test_stop_help_covers_both_modes(command):
    text = " ".join(invoke([command, "--help"]).stdout.split())
    assert "l2-above / l2-below" in text
    assert "STOP when ||frame|| > F in mode above, < F in mode below" in text


def test_evaluate_l2_below(cli_data, cli_model_path, cli_model):
    result = invoke(["evaluate", cli_data["valid"], "--model", cli_model_path,
                     "--stop", "l2-below", "--threshold", "0.3"])
    assert result.exit_code == 0
    inputs, targets = sg.load_jsonl(cli_data["valid"])
    expected = sg.evaluate(cli_model, inputs, targets, stop=[sg.L2Norm(0.3, "below")])
    assert json.loads(result.stdout) == rounded(expected)


@pytest.mark.slow  # a LiteRT conversion, three streams (~5 s)
def test_tflite_takes_any_built_in_stop_kind(cli_model_path, tmp_path):
    path = str(tmp_path / "above.tflite")
    assert invoke(["export", "--model", cli_model_path, "--stop", "l2-above", "--threshold", "1",
                   "-o", path]).exit_code == 0
    for args in (["--stop", "l2-below", "--threshold", "0.4"], ["--stop", "head"],
                 ["--stop", "none"]):
        lite = invoke(["stream", "--model", path, *args], "1 2 3\n0 0 0\n0.3 -1 0\n")
        keras_run = invoke(["stream", "--model", cli_model_path, *args],
                           "1 2 3\n0 0 0\n0.3 -1 0\n")
        assert lite.exit_code == keras_run.exit_code == 0, lite.output
        got = [json.loads(line) for line in lite.stdout.splitlines()]
        expected = [json.loads(line) for line in keras_run.stdout.splitlines()]
        assert [len(o) for o in got] == [len(o) for o in expected], args
        for a, b in zip(got, expected):
            np.testing.assert_allclose(np.reshape(a, (-1, 2)), np.reshape(b, (-1, 2)), atol=1e-5)
    result = invoke(["stream", "--model", path, "--stop", "l2", "--threshold", "2"], "1 2 3\n")
    assert result.exit_code == 0
