"""`streamgen` as a real process: streaming through pipes, `| head -1`,
SIGINT, a clean stderr, and a `.tflite` model streamed without TensorFlow.

Each process pays TensorFlow's start-up (~4 s), so there are few of them.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import streamgen as sg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def test_cli_import_and_help_do_not_import_tensorflow():
    code = ("import sys; from streamgen.cli.main import cli; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=TIMEOUT)
    assert (result.returncode, result.stdout, result.stderr) == (0, "False False\n", "")


def test_module_entry_point_and_fast_help():
    result = subprocess.run([sys.executable, "-m", "streamgen.cli.main", "--version"],
                            capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, f"streamgen, version {sg.__version__}\n", "")
    result = subprocess.run(STREAMGEN + ["stream", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=20)  # no TensorFlow start-up for help
    assert result.returncode == 0 and result.stdout.startswith("Usage: streamgen stream")
