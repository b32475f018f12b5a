"""`streamgen` as a real process: streaming through pipes, `| head -1`,
SIGINT, a clean stderr, and a `.tflite` model streamed without TensorFlow.

Each process pays TensorFlow's start-up (~4 s), so there are few of them.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import streamgen as sg
from streamgen import saving

pytestmark = pytest.mark.slow  # real streamgen processes (TensorFlow in each)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "streamgen")
# The installed console script when there is one, else the module.
STREAMGEN = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "streamgen.cli.main"]
TIMEOUT = 120  # seconds for any one answer (TensorFlow start-up included)
ROWS = np.round(np.random.default_rng(11).normal(size=(6, 3)), 4).astype(np.float32)


def line_of(row):
    return (" ".join(f"{v:g}" for v in row) + "\n").encode()


class Process:
    """A `streamgen` process whose stdout lines arrive in a queue."""

    def __init__(self, args, **kwargs):
        self.proc = subprocess.Popen(
            STREAMGEN + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=ROOT, **kwargs)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def answer(self):
        try:
            return self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            self.proc.kill()
            pytest.fail("no output line in time: the output is not streamed")

    def finish(self):
        """Closes stdin; returns (exit status, stderr text)."""
        self.proc.stdin.close()
        stderr = self.proc.stderr.read().decode()
        return self.proc.wait(timeout=TIMEOUT), stderr


def test_stream_answers_each_line_before_the_next_is_written(cli_model_path, cli_model):
    process = Process(["stream", "--model", cli_model_path])
    stream = cli_model.open_stream()
    for row in ROWS[:3]:
        process.send(line_of(row))
        out = json.loads(process.answer())  # read BEFORE the next line is written
        expected = stream.step(row)
        assert len(out) == len(expected)
        if len(out):
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    process.send(b"\n")  # a blank line: reset, and a blank line back
    assert process.answer() == b"\n"
    stream.reset()
    process.send(line_of(ROWS[0]))
    assert len(json.loads(process.answer())) == len(stream.step(ROWS[0]))
    status, stderr = process.finish()
    assert (status, stderr) == (0, "")  # no TensorFlow log lines either
    assert process.answer() is None  # nothing more


def test_ctrl_c_exits_130_without_traceback(cli_model_path):
    process = Process(["stream", "--model", cli_model_path])
    process.send(line_of(ROWS[0]))
    process.answer()  # it is now waiting for the next line
    process.proc.send_signal(signal.SIGINT)
    status = process.proc.wait(timeout=TIMEOUT)
    stderr = process.proc.stderr.read().decode()
    assert (status, stderr) == (130, "")


@pytest.mark.slow
def test_closed_pipe_ends_quietly(cli_model_path):
    data = b"".join(line_of(ROWS[i % len(ROWS)]) for i in range(400))
    stream = subprocess.Popen(
        STREAMGEN + ["stream", "--model", cli_model_path], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    head = subprocess.Popen(["head", "-n", "1"], stdin=stream.stdout, stdout=subprocess.PIPE)
    stream.stdout.close()  # only head reads it now
    threading.Thread(target=lambda: (stream.stdin.write(data), stream.stdin.close()),
                     daemon=True).start()
    first, _ = head.communicate(timeout=TIMEOUT)
    status = stream.wait(timeout=TIMEOUT)
    stderr = stream.stderr.read().decode()
    assert first.count(b"\n") == 1 and json.loads(first) is not None
    assert (status, stderr) == (1, "")  # status 1 as the Python docs advise, no traceback


@pytest.mark.slow
def test_export_leaves_stderr_clean(cli_model_path, tmp_path):
    """A fresh process: no TensorFlow, converter or LiteRT line (LiteRT logs
    "Created TensorFlow Lite XNNPACK delegate for CPU." once per process,
    when the export's self-check first plans an interpreter)."""
    pytest.importorskip("ai_edge_litert")
    path = str(tmp_path / "quiet.tflite")
    result = subprocess.run(STREAMGEN + ["export", "--model", cli_model_path, "-o", path],
                            capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"wrote {path} ({os.path.getsize(path):,} bytes)\n"


LITE_RUN = """
import sys
from streamgen.cli.main import cli
try:
    cli.main(sys.argv[1:], prog_name="streamgen")
except SystemExit as exit:
    print("tensorflow imported:", "tensorflow" in sys.modules, file=sys.stderr)
    raise
"""


@pytest.mark.slow
def test_tflite_model_streams_without_tensorflow(cli_tflite, cli_model):
    data = b"".join(line_of(row) for row in ROWS) + b"\n" + line_of(ROWS[0])
    result = subprocess.run(
        [sys.executable, "-c", LITE_RUN, "stream", "--model", cli_tflite, "--threshold", "0.6"],
        input=data, capture_output=True, cwd=ROOT, timeout=TIMEOUT)
    assert result.returncode == 0
    assert result.stderr.decode() == "tensorflow imported: False\n"  # and nothing else
    lines = result.stdout.decode().split("\n")
    stream = cli_model.open_stream(stop=[sg.StopHead(0.6)])
    expected = [stream.step(row) for row in ROWS]
    stream.reset()
    expected += [None, stream.step(ROWS[0])]
    assert len(lines) == len(expected) + 1
    for line, out in zip(lines, expected):
        if out is None:
            assert line == ""
        else:
            frames = json.loads(line)
            assert len(frames) == len(out)
            if len(out):
                np.testing.assert_allclose(frames, out, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cli_import_and_help_do_not_import_tensorflow():
    code = ("import sys; from streamgen.cli.main import cli; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=TIMEOUT)
    assert (result.returncode, result.stdout, result.stderr) == (0, "False False\n", "")


@pytest.mark.slow
def test_module_entry_point_and_fast_help():
    result = subprocess.run([sys.executable, "-m", "streamgen.cli.main", "--version"],
                            capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"streamgen, version {sg.__version__}\n", "")
    result = subprocess.run(STREAMGEN + ["stream", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=20)  # no TensorFlow start-up for help
    assert result.returncode == 0 and result.stdout.startswith("Usage: streamgen stream")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["info", "evaluate", "plot"])
def test_tflite_info_evaluate_plot_without_tensorflow(cli_tflite, command, tmp_path):
    """Issue 11, item 15: info, evaluate and plot take a .tflite export and
    run it on LiteRT alone."""
    args = {"info": ["--json"],
            "evaluate": [os.path.join(ROOT, "samples", "valid.jsonl")],
            "plot": [os.path.join(ROOT, "samples", "inputs.txt"), "-o", str(tmp_path / "f.png")]}
    if command == "plot":
        pytest.importorskip("matplotlib")
    result = subprocess.run(
        [sys.executable, "-c", LITE_RUN, command, "--model", cli_tflite, *args[command]],
        capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT)
    assert (result.returncode, result.stderr) == (0, "tensorflow imported: False\n")
    assert result.stdout.count("\n") == 1


def small_jsonl(folder, name, lines):
    path = folder / f"{name}.jsonl"
    with open(os.path.join(ROOT, "samples", f"{name}.jsonl")) as f:
        path.write_text("".join(next(f) for _ in range(lines)))
    return str(path)


@pytest.mark.slow
def test_ctrl_c_during_train_never_leaves_a_broken_model(tmp_path):
    """Issue 11, item 1, with a real signal: `train --valid` interrupted
    while it rewrites its checkpoint. With a tiny model an epoch is mostly
    validation and the checkpoint write, so the signal lands in or near a
    write. OUT is a complete model and the message says what it holds.

    One process (each pays ~5-8 s of TensorFlow start on 2 busy cores);
    `test_commands_model.py` interrupts the write itself at 24 points,
    in-process, and a checkpoint write through the CLI."""
    train = small_jsonl(tmp_path, "train", 12)
    valid = small_jsonl(tmp_path, "valid", 6)
    delays = (0.03,)
    runs = []
    for n, delay in enumerate(delays):
        out = tmp_path / f"run{n}" / "m.keras"
        out.parent.mkdir()
        process = subprocess.Popen(
            STREAMGEN + ["train", train, "--valid", valid, "-o", str(out), "--epochs", "500",
                         "--units", "4", "--ir-size", "4", "--batch-size", "6", "--seed", str(n),
                         "--learning-rate", "0.01", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        runs.append((process, out, delay))
    deadline = time.monotonic() + TIMEOUT
    pending = list(runs)
    while pending and time.monotonic() < deadline:
        for run in list(pending):
            process, out, delay = run
            if out.exists():  # its first checkpoint is complete
                time.sleep(delay)
                process.send_signal(signal.SIGINT)
                pending.remove(run)
        time.sleep(0.002)
    assert not pending, "no checkpoint in time"
    for process, out, _ in runs:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        assert (process.returncode, stdout) == (130, b""), stderr
        stderr = stderr.decode()
        assert re.fullmatch(
            rf"streamgen: interrupted after \d+ epochs?; (the best model so far \(epoch \d+, "
            rf"val_loss \S+\) is in|saved the model to) {re.escape(str(out))}\n", stderr), stderr
        assert os.listdir(out.parent) == ["m.keras"]  # no temporary file left behind
        assert isinstance(sg.load_model(str(out)), sg.StreamGen)
