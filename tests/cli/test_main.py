"""The program's edges (`streamgen.cli.main.main`), as real processes:
closed and full standard streams, and Ctrl-C before a command runs.

Most run commands that never import TensorFlow (`--help`, `info` on a
`.tflite`), so each costs a fraction of a second.
"""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "streamgen")
STREAMGEN = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "streamgen.cli.main"]
TIMEOUT = 120
FULL = "streamgen: error: cannot write to standard output: No space left on device\n"


def shell(args, redirect):
    """Runs `streamgen ARGS REDIRECT` through sh; returns (status, stdout, stderr)."""
    command = f"exec {shlex.join(STREAMGEN + args)} {redirect}"
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=ROOT,
                            timeout=TIMEOUT)
    return result.returncode, result.stdout, result.stderr


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


@needs_dev_full
def test_full_stdout_is_one_line_and_status_1(cli_tflite):
    """`> /dev/full` (ENOSPC): one line, status 1, for any command's output."""
    for args in (["--help"], ["--version"], ["info", "--model", cli_tflite],
                 ["info", "--model", cli_tflite, "--json"]):
        assert shell(args, "> /dev/full") == (1, "", FULL), args


@needs_dev_full
def test_full_stdout_after_work_done(cli_tflite):
    data = os.path.join(ROOT, "samples", "valid.jsonl")
    assert shell(["evaluate", data, "--model", cli_tflite], "> /dev/full") == (1, "", FULL)


def test_closed_stdout_is_refused_at_once(cli_tflite):
    closed = "streamgen: error: cannot write to standard output: it is closed\n"
    for args in (["--help"], ["info", "--model", cli_tflite]):
        assert shell(args, ">&-") == (1, "", closed), args


def test_closed_stdin_is_an_error_only_where_it_is_read(cli_tflite):
    closed = "streamgen: error: cannot read standard input: it is closed\n"
    assert shell(["stream", "--model", cli_tflite], "<&-") == (1, "", closed)
    status, stdout, stderr = shell(["info", "--model", cli_tflite], "<&-")
    assert (status, stderr) == (0, "") and stdout.startswith("model ")


SKIP = "--on-error", "skip"  # a bad line: reported on stderr, status 0


def test_closed_stderr_keeps_the_status(cli_tflite):
    # Nothing to say: status 0. A message that could not be written: status 1
    # (a usage error keeps its 2).
    status, stdout, _ = shell(["info", "--model", cli_tflite], "2>&-")
    assert status == 0 and stdout.startswith("model ")
    assert shell(["stream", "--model", cli_tflite, *SKIP], "<<EOF\n1 2\nEOF") == (
        0, "", "streamgen: error: <stdin>:1: expected 3 numbers, got 2\n"
               "streamgen: skipped 1 bad line\n")
    assert shell(["stream", "--model", cli_tflite, *SKIP], "2>&- <<EOF\n1 2\nEOF") == (1, "", "")
    assert shell(["no-such-command"], "2>&-")[0] == 2


@needs_dev_full
def test_full_stderr_is_a_failure(cli_tflite):
    assert shell(["stream", "--model", cli_tflite, *SKIP],
                 "2>/dev/full <<EOF\n1 2\nEOF") == (1, "", "")


@pytest.mark.slow
def test_closed_pipe_stays_quiet(cli_tflite):
    # `| head -c 10` closes the pipe after 10 bytes of the help text.
    command = f"{shlex.join(STREAMGEN + ['info', '--model', cli_tflite])} | head -c 10"
    result = subprocess.run(["sh", "-c", f"{command}; exit 0"], capture_output=True,
                            text=True, cwd=ROOT, timeout=TIMEOUT)
    assert result.stderr == ""


@pytest.mark.slow
def test_ctrl_c_while_starting_never_shows_a_traceback():
    """SIGINT at many points of the start-up (imports of click, numpy, the
    commands) and of `--help`: status 130 (or the help, done), never a
    traceback from streamgen's code. Only a SIGINT landing before streamgen's
    first line runs (the interpreter's own start) may still be Python's."""
    outcomes = []
    for delay in (0.03, 0.05, 0.07, 0.09, 0.12, 0.15, 0.2, 0.3):
        process = subprocess.Popen(STREAMGEN + ["--help"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=ROOT)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
        stderr = stderr.decode()
        if "Traceback" in stderr:
            # The interpreter's start (site, the editable-install finder).
            assert "cli/main.py" not in stderr and "click" not in stderr, stderr
            outcomes.append("python")
        elif process.returncode == 0:
            assert stdout.startswith(b"Usage: streamgen") and stderr == ""
            outcomes.append("done")
        else:
            assert process.returncode in (130, -signal.SIGINT) and stderr == "", stderr
            outcomes.append("quiet")
    assert "quiet" in outcomes  # some SIGINT landed in streamgen's start-up
