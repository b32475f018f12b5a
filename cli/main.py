"""The `streamgen` command: a click group of thin commands over the library.

Commands live in `commands_*.py`; shared options, model loading and the
error policy in `common.py`. No module here imports TensorFlow at import
time, so `streamgen --help` stays fast and a `.tflite` model streams
without it.

Exit statuses: 0 success; 1 a runtime error (`streamgen: error: ...`), an
error writing the output, or a closed output pipe; 2 a usage error (click's
`Usage: ... Error: ...`); 130 interrupted (Ctrl-C).

The program's edges (`main`, used by the console script and by
`python -m streamgen.cli.main`):

- *Ctrl-C at any time* ends with status 130 and no traceback. Until a
  command runs (while Python imports click, numpy and the commands) a
  SIGINT ends the process at once; inside a command it raises
  `KeyboardInterrupt`, so that `train` can save what it has. A SIGINT that
  lands before this module's first lines run (while the interpreter starts
  and imports the `streamgen` package around it: ~30 ms, most of it the
  interpreter's) is Python's to handle.
- *Standard streams*: a closed stdout (`>&-`) is refused before anything
  runs; a closed stdin (`<&-`) is an error only for a command that reads it
  (`streamgen: error: cannot read standard input: it is closed`); a closed
  stderr swallows messages, but a run that had one to write ends with
  status 1.
- *Write errors* (`> /dev/full`, an I/O error) become one line,
  `streamgen: error: cannot write to standard output: ...`, and status 1;
  a closed pipe (`| head -1`) ends quietly with status 1.

None of this is installed when the module is imported by another program
(the tests' `CliRunner`, an application): only `main` changes process-wide
state.
"""

# `_signal` is the built-in C module under `signal`: no Python code runs to
# import it (CPython 3.11 has it, `os` and `sys` loaded before any module
# runs). `import signal` runs signal.py and builds its enums (~2 ms, more on
# a loaded machine), and a SIGINT landing there showed a traceback through
# this file; so the handler goes in first and `signal` comes after.
import _signal
import os
import sys


def _exit_at_once(signum, frame):
    """SIGINT before a command runs: nothing to save or flush yet."""
    os._exit(130)


# The console script imports this module first thing; from here on, Ctrl-C
# during the imports below (~0.1 s) ends quietly. Only for the program:
# a host program's signal handling is not ours to change.
if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "streamgen":
    try:
        _signal.signal(_signal.SIGINT, _exit_at_once)
    except (ValueError, OSError):  # not the main thread: leave it alone
        pass

import signal  # noqa: E402

import io  # noqa: E402

import click  # noqa: E402

from streamgen.cli import common  # noqa: E402
from streamgen.cli.commands_decode import decode  # noqa: E402
from streamgen.cli.commands_model import evaluate, export, info, train  # noqa: E402
from streamgen.cli.commands_plot import plot  # noqa: E402
from streamgen.cli.commands_serve import serve  # noqa: E402
from streamgen.cli.commands_stream import stream  # noqa: E402


class StreamgenGroup(click.Group):
    """A click group that ends quietly on Ctrl-C and on a closed pipe."""

    def invoke(self, ctx):
        # Under `main`, Ctrl-C raises KeyboardInterrupt while a command runs.
        interruptible = signal.getsignal(signal.SIGINT) is _exit_at_once
        if interruptible:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        except BrokenPipeError:
            # The reader went away (`streamgen stream | head -1`). As the
            # Python docs advise (signal module, "Note on SIGPIPE"), point
            # stdout at devnull so the flush at exit cannot fail again.
            _park(sys.stdout)
            raise click.exceptions.Exit(1) from None
        finally:
            if interruptible:
                signal.signal(signal.SIGINT, _exit_at_once)


@click.group(
    name="streamgen",
    cls=StreamgenGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="streamgen", prog_name="streamgen")
def cli():
    """Hierarchical streaming generation: one input vector in, one
    variable-length output sequence Out[i] out, as soon as it is decoded.

    Run 'streamgen COMMAND -h' for a command's options and an example.

    \b
    Example:
      streamgen stream < samples/inputs.txt
      streamgen train samples/train.jsonl --valid samples/valid.jsonl -o m.keras
      streamgen evaluate samples/valid.jsonl --model m.keras
    """


for _command in (stream, decode, train, evaluate, info, plot, export, serve):
    cli.add_command(_command)


# ---------------------------------------------------------------------- #
# The program's edges: standard streams and write errors.
# ---------------------------------------------------------------------- #
class _ClosedInput(io.RawIOBase):
    """Standard input when fd 0 was closed: reading it is a runtime error."""

    def readable(self):
        return True

    def readinto(self, buffer):
        raise common.CliError("cannot read standard input: it is closed")


class _LostOutput(io.RawIOBase):
    """Standard error when fd 2 was closed: remembers that a write was lost."""

    lost = False

    def writable(self):
        return True

    def write(self, data):
        if len(data):
            _LostOutput.lost = True
        return len(data)


def _occupy(fd):
    """Points a closed `fd` at devnull, so that no file opened later gets it
    (TensorFlow's C++ logs and Python's own writes go to fds 1 and 2)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    if devnull != fd:
        os.dup2(devnull, fd)
        os.close(devnull)


def _park(stream):
    """Points a failed output stream's fd at devnull: what is still buffered
    then flushes there at exit instead of failing again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # no real fd (tests)


class _OutputError(OSError):
    """A failed write to standard output or standard error (not EPIPE)."""

    stream = "standard output"


class _StandardOutput(io.FileIO):
    """fd 1 or 2, raising `_OutputError` (naming the stream) when a write fails."""

    def __init__(self, fd, stream):
        super().__init__(fd, "w", closefd=False)
        self.stream = stream

    def write(self, data):
        try:
            return super().write(data)
        except BrokenPipeError:
            raise  # a reader that went away: quiet, as before
        except OSError as error:
            failed = _OutputError(error.errno, error.strerror)
            failed.stream = self.stream
            raise failed from None


def _watch(stream, fd, name):
    """`stream` again, over fd `fd`, its write errors tagged with `name`."""
    try:
        if stream.fileno() != fd:
            return stream
        buffer = io.BufferedWriter(_StandardOutput(fd, name))
        return io.TextIOWrapper(buffer, encoding=stream.encoding, errors=stream.errors,
                                line_buffering=stream.line_buffering)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return stream  # not a real fd: leave it


def _check_streams():
    """Deals with closed standard streams; returns an exit status or None."""
    if sys.stderr is None:  # `2>&-`
        _occupy(2)
        sys.stderr = io.TextIOWrapper(_LostOutput(), write_through=True)
    else:
        sys.stderr.flush()
        sys.stderr = _watch(sys.stderr, 2, "standard error")
    if sys.stdin is None:  # `<&-`
        _occupy(0)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(_ClosedInput()))
    if sys.stdout is None:  # `>&-`: refuse before any work is done
        _occupy(1)
        _error("cannot write to standard output: it is closed")
        return 1
    sys.stdout.flush()
    sys.stdout = _watch(sys.stdout, 1, "standard output")
    return None


def _error(message):
    """Writes `streamgen: error: <message>` to stderr, if it still can."""
    try:
        sys.stderr.write(f"{common.PREFIX}error: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        _park(sys.stderr)


def _write_failed(error):
    """One line for an `OSError` that escaped click; returns status 1.

    A failed write of stdout or stderr names the stream; any other error
    (a command reports its own file errors) names its file, if it has one.
    """
    if isinstance(error, _OutputError):
        _park(sys.stdout if error.stream == "standard output" else sys.stderr)
        _error(f"cannot write to {error.stream}: {error.strerror or error}")
        return 1
    where = f"{error.filename}: " if getattr(error, "filename", None) else ""
    _error(f"{where}{error.strerror or error}")
    return 1


def main():
    """Console-script entry point (`streamgen`).

    Runs the click group, then turns whatever could still go wrong at the
    edges (closed or full standard streams) into one line and a status
    (see the module docstring).
    """
    from streamgen import quiet

    quiet.enable()  # TensorFlow's import log lines are not for our users
    status = _check_streams()
    if status is not None:
        sys.exit(status)
    try:
        cli.main(prog_name="streamgen")  # standalone: always raises SystemExit
        status = 0
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except OSError as error:
        status = _write_failed(error)
    # Output still buffered must reach its file now, where a failure can
    # still be reported and change the status, not in Python's shutdown.
    for output in (sys.stdout, sys.stderr):
        try:
            output.flush()
        except BrokenPipeError:
            _park(output)
            status = status or 1
        except (OSError, ValueError) as error:
            _park(output)
            if output is sys.stdout:
                _error(f"cannot write to standard output: {getattr(error, 'strerror', None) or error}")
            status = status or 1
    if _LostOutput.lost:  # a message was due on a closed stderr
        status = status or 1
    sys.exit(status)


if __name__ == "__main__":
    main()
