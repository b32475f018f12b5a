"""`streamgen stream` and the group through click's `CliRunner` (in-process).

The subprocess tests (real pipes: streaming, `| head -1`, SIGINT) are in
`test_subprocess.py`; train / evaluate / info / plot / export in
`test_commands_model.py`.
"""

import io
import json
import os
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import streamgen as sg
from streamgen.cli import common
from streamgen.cli.main import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = np.round(np.random.default_rng(5).normal(size=(8, 3)), 4).astype(np.float32)


def invoke(args, input=None):
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


def text_of(rows):
    return "".join(" ".join(f"{v:g}" for v in row) + "\n" for row in rows)


def reference(model, rows, **options):
    """The library's `Out[i]` for rows (`None` = blank line: reset)."""
    stream, outs = model.open_stream(**options), []
    for row in rows:
        if row is None:
            stream.reset()
            outs.append(None)
        else:
            outs.append(stream.step(np.asarray(row, np.float32)))
    return outs


def assert_matches(stdout, outs):
    """Each output line is the JSON of `Out[i]` (blank for a reset)."""
    lines = stdout.split("\n")
    assert lines[-1] == "" and len(lines) == len(outs) + 1, stdout
    for line, out in zip(lines, outs):
        if out is None:
            assert line == ""
            continue
        frames = json.loads(line)
        assert len(frames) == len(out)  # exact length
        if len(out):
            np.testing.assert_allclose(np.array(frames), out, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- #
# Group: help, version.
# ---------------------------------------------------------------------- #
COMMANDS = ["stream", "train", "evaluate", "info", "plot", "export"]


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_group_help_lists_commands(flag):
    result = invoke([flag])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: streamgen [OPTIONS] COMMAND [ARGS]...")
    for command in COMMANDS:
        assert f"\n  {command} " in result.stdout
    assert "Example:\n    streamgen stream < samples/inputs.txt\n" in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_has_help_with_example(command, flag):
    result = invoke([command, flag])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith(f"Usage: streamgen {command} [OPTIONS]")
    example = result.stdout.split("Example:\n", 1)[1]
    assert example.startswith(f"    streamgen {command}")  # \b kept the lines


def test_version():
    result = invoke(["--version"])
    assert (result.exit_code, result.stdout) == (0, f"streamgen, version {sg.__version__}\n")


def test_unknown_command_is_a_usage_error():
    result = invoke(["strem"])
    assert result.exit_code == 2
    assert result.stderr == (
        "Usage: streamgen [OPTIONS] COMMAND [ARGS]...\nTry 'streamgen --help' for help.\n\n"
        "Error: No such command 'strem'. Did you mean 'stream'?\n")


# ---------------------------------------------------------------------- #
# stream: output.
# ---------------------------------------------------------------------- #
def test_stream_matches_library(cli_model_path, cli_model):
    result = invoke(["stream", "--model", cli_model_path], text_of(ROWS))
    assert result.exit_code == 0 and result.stderr == ""
    outs = reference(cli_model, ROWS)
    assert sorted({len(o) for o in outs}) != [0]  # the test sees real frames
    assert_matches(result.stdout, outs)


def test_stream_default_model_on_samples():
    with open(os.path.join(ROOT, "samples", "inputs.txt"), "rb") as f:
        data = f.read()
    result = invoke(["stream"], data)
    assert result.exit_code == 0 and result.stderr == ""
    rows = []
    for line in data.decode().splitlines():
        if line.startswith("#"):
            continue
        rows.append(None if not line.strip() else [float(v) for v in line.split()])
    assert_matches(result.stdout, reference(sg.load_default(), rows))


def test_stream_input_formats_and_resets(cli_model_path, cli_model):
    a, b, c = (ROWS[i].tolist() for i in range(3))
    data = (
        "\ufeff# a comment, no output\r\n"  # BOM and CRLF
        f"  {a[0]}, {a[1]},{a[2]}  \r\n"  # commas, spaces
        f"[{b[0]}, {b[1]}, {b[2]}]\n"  # JSON
        "   \n"  # whitespace only: a blank line
        f"\t{a[0]} {a[1]}\t{a[2]}\n"
        "    # indented comment\n"
        f"{b[0]} {b[1]} {b[2]}\n"
        "\n\n"  # two blank lines: two blank output lines
        f"{c[0]:.4f} {c[1]:.4f} {c[2]:.4f}"  # no final newline
    )
    result = invoke(["stream", "--model", cli_model_path], data.encode())
    assert result.exit_code == 0 and result.stderr == ""
    outs = reference(cli_model, [a, b, None, a, b, None, None, c])
    assert_matches(result.stdout, outs)
    lines = result.stdout.split("\n")
    assert lines[0] == lines[3] and lines[1] == lines[4]  # reset really resets


def test_stream_reads_a_file_argument(cli_model_path, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text(text_of(ROWS[:3]))
    from_file = invoke(["stream", "--model", cli_model_path, str(path)])
    from_stdin = invoke(["stream", "--model", cli_model_path, "-"], text_of(ROWS[:3]))
    assert from_file.exit_code == from_stdin.exit_code == 0
    assert from_file.stdout == from_stdin.stdout and from_file.stdout.count("\n") == 3


def test_stream_empty_input(cli_model_path):
    result = invoke(["stream", "--model", cli_model_path], b"")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


def test_number_format():
    assert common.number(0.123456789) == "0.123457"
    assert common.number(np.float32(-1.5)) == "-1.5"
    assert common.number(1.0) == "1"
    assert common.number(1.5e-7) == "1.5e-07"
    assert common.number(float("nan")) == common.number(float("inf")) == "null"
    assert common.frames_json(np.zeros((0, 2), np.float32)) == "[]"
    assert common.frames_json(np.array([[1, 2.5], [0, -3e-9]])) == "[[1,2.5],[0,-3e-09]]"


# ---------------------------------------------------------------------- #
# stream: stop options.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("args, options", [
    (["--stop", "none"], dict(stop=[])),
    (["--stop", "none", "--max-steps", "3"], dict(stop=[], max_steps=3)),
    (["--max-steps", "2"], dict(max_steps=2)),
    (["--stop", "head", "--threshold", "0.9"], dict(stop=[sg.StopHead(0.9)])),
    (["--threshold", "0.9"], dict(stop=[sg.StopHead(0.9)])),  # the model's kind
    (["--stop", "head"], dict(stop=[sg.StopHead(0.5)])),
    (["--stop", "l2", "--threshold", "0.3"], dict(stop=[sg.L2Norm(0.3)])),
    (["--stop", "l2"], dict(stop=[sg.L2Norm(3.0)])),
])
def test_stream_stop_options(cli_model_path, cli_model, args, options):
    result = invoke(["stream", "--model", cli_model_path, *args], text_of(ROWS))
    assert result.exit_code == 0 and result.stderr == ""
    assert_matches(result.stdout, reference(cli_model, ROWS, **options))


@pytest.mark.parametrize("args, length", [
    (["--stop", "none"], 9),
    (["--stop", "none", "--max-steps", "4"], 4),
    (["--stop", "head", "--threshold", "1"], 9),  # p > 1 never
    (["--stop", "head", "--threshold", "0"], 0),  # p > 0 always
    (["--stop", "l2", "--threshold", "0"], 0),  # any frame has a norm > 0
])
def test_stream_stop_extremes(cli_model_path, args, length):
    result = invoke(["stream", "--model", cli_model_path, *args], text_of(ROWS))
    assert result.exit_code == 0
    assert [len(json.loads(line)) for line in result.stdout.splitlines()] == [length] * len(ROWS)


# ---------------------------------------------------------------------- #
# stream: usage errors (click's format, status 2).
# ---------------------------------------------------------------------- #
def usage(command, error):
    return (f"Usage: streamgen {command} [OPTIONS]{' [INPUT]' if command == 'stream' else ''}\n"
            f"Try 'streamgen {command} --help' for help.\n\nError: {error}\n")


@pytest.mark.parametrize("args, error", [
    (["--max-steps", "12"], "Invalid value for '--max-steps': 12 is above the model's "
                            "trained cap of 9 (--max-steps may only lower it)."),
    (["--max-steps", "0"], "Invalid value for '--max-steps': 0 is not in the range x>=1."),
    (["--max-steps", "two"], "Invalid value for '--max-steps': 'two' is not a valid integer range."),
    (["--stop", "norm"], "Invalid value for '--stop': 'norm' is not one of 'head', 'l2', 'l2-above', 'l2-below', 'sample', 'none'."),
    (["--stop", "head", "--threshold", "1.5"],
     "Invalid value for '--threshold': 1.5 is not a probability in [0, 1] (needed by --stop head)."),
    (["--threshold", "-0.1"],
     "Invalid value for '--threshold': -0.1 is not a probability in [0, 1] (needed by --stop head)."),
    (["--stop", "l2", "--threshold", "-1"],
     "Invalid value for '--threshold': -1 is negative (--stop l2 needs a norm >= 0)."),
    (["--threshold", "nan"], "Invalid value for '--threshold': nan is not a threshold."),
    (["--stop", "none", "--threshold", "0.5"], "--threshold cannot be used with --stop none."),
    (["--on-error", "ignore"],
     "Invalid value for '--on-error': 'ignore' is not one of 'fail', 'skip'."),
    (["no-such-file.txt"],
     "Invalid value for '[INPUT]': 'no-such-file.txt': No such file or directory"),
    (["--bogus"], "No such option '--bogus'."),
])
def test_stream_usage_errors(cli_model_path, args, error):
    result = invoke(["stream", "--model", cli_model_path, *args], text_of(ROWS))
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == usage("stream", error)


def test_stream_threshold_needs_stop_with_several_criteria(tmp_path):
    path = str(tmp_path / "two.keras")
    sg.StreamGen(3, 2, units=4, ir_size=4, stop=[sg.StopHead(0.5), sg.L2Norm(2.0)]).save(path)
    result = invoke(["stream", "--model", path, "--threshold", "0.5"], "")
    assert result.exit_code == 2
    assert result.stderr == usage(
        "stream", "--threshold needs --stop head|l2|sample (the model has 2 stop criteria).")


# ---------------------------------------------------------------------- #
# Model files (every command loads them the same way).
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, cli_model_path):
    """name -> path of a broken model file, and the runtime message expected."""
    import keras

    folder = tmp_path_factory.mktemp("bad_models")
    data = open(cli_model_path, "rb").read()
    files = {}

    def add(name, content, message):
        path = folder / name
        path.write_bytes(content)
        files[name] = (str(path), message.format(path=path))

    add("truncated.keras", data[: len(data) // 2],
        "{path}: not a .keras model (not a zip archive: truncated or corrupt?)")
    add("empty.keras", b"", "{path}: not a .keras model (not a zip archive: truncated or corrupt?)")
    add("text.keras", b"hello\n" * 100,
        "{path}: not a .keras model (not a zip archive: truncated or corrupt?)")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    add("other.keras", buffer.getvalue(), "{path}: not a .keras model (no config.json inside)")
    buffer = io.BytesIO()  # a member whose bytes no longer match its checksum
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buffer, "w") as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
    damaged = bytearray(buffer.getvalue())
    start = damaged.index(b"model.weights.h5") + len(b"model.weights.h5") + 200
    damaged[start] ^= 0xFF
    add("flipped.keras", bytes(damaged),
        "{path}: corrupt .keras model (bad checksum in model.weights.h5)")
    path = folder / "sequential.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    files["sequential.keras"] = (str(path), f"{path}: not a streamgen model (it holds a Sequential)")
    return files


BAD_MODELS = ["truncated.keras", "empty.keras", "text.keras", "other.keras", "flipped.keras",
              "sequential.keras"]


@pytest.mark.parametrize("name", BAD_MODELS)
@pytest.mark.parametrize("command", ["stream", "evaluate", "info"])
def test_bad_model_files_are_one_runtime_line(bad_models, name, command, tmp_path):
    path, message = bad_models[name]
    data = os.path.join(ROOT, "samples", "valid.jsonl")
    args = {"stream": [], "evaluate": [data], "info": []}[command]
    result = invoke([command, "--model", path, *args], text_of(ROWS))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"streamgen: error: {message}\n"


def test_model_with_unreadable_weights(tmp_path, cli_model_path):
    path = tmp_path / "weights.keras"
    with zipfile.ZipFile(cli_model_path) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            dst.writestr(item.filename, content[:100] if item.filename.endswith(".h5") else content)
    result = invoke(["stream", "--model", str(path)], "")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"streamgen: error: {path}: cannot load the model: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("name, error", [
    ("missing.keras", "Invalid value for '--model': File '{path}' does not exist."),
    ("model.h5", "Invalid value for '--model': expected a .keras or .tflite model file, "
                 "got '{path}'."),
    ("folder.keras", "Invalid value for '--model': File '{path}' is a directory."),
])
def test_model_paths_are_usage_errors(tmp_path, name, error):
    path = tmp_path / name
    if name == "model.h5":
        path.write_bytes(b"x")
    if name == "folder.keras":
        path.mkdir()
    result = invoke(["stream", "--model", str(path)], "")
    assert result.exit_code == 2
    assert result.stderr == usage("stream", error.format(path=path))


# ---------------------------------------------------------------------- #
# stream: bad input lines, a catalog.
# ---------------------------------------------------------------------- #
LONG = b"1 " * (1 << 19) + b"1"  # 1 MiB + 1 byte
CATALOG = [  # (bad line, message)
    (b"1 2", "expected 3 numbers, got 2"),
    (b"1 2 3 4", "expected 3 numbers, got 4"),
    (b"[]", "expected 3 numbers, got 0"),
    (b"1 x 3", "field 2: not a number: 'x'"),
    (b"0x10 1 2", "field 1: not a number: '0x10'"),
    (b"1,,3", "field 2: not a number: ''"),
    (b"1;2;3", "field 1: not a number: '1;2;3'"),
    (b"1 nan 3", "field 2: not a finite number: 'nan'"),
    (b"-inf 1 2", "field 1: not a finite number: '-inf'"),
    (b"[NaN, 1, 2]", "field 1: not a finite number: 'NaN'"),
    (b"1e400 1 2", "field 1: out of range for float32: '1e400'"),
    (b"0 0 -1e39", "field 3: out of range for float32: '-1e39'"),
    (b"[[1, 2, 3]]", "JSON: expected a flat array of numbers, field 1 is a list"),
    (b'[1, "2", 3]', "JSON: expected a flat array of numbers, field 2 is a string"),
    (b"[1, null, 3]", "JSON: expected a flat array of numbers, field 2 is null"),
    (b"[1, 2, true]", "JSON: expected a flat array of numbers, field 3 is a boolean"),
    (b'[{"x": 1}, 2, 3]', "JSON: expected a flat array of numbers, field 1 is an object"),
    (b"[1, 2,", "invalid JSON array: Expecting value at column 7"),
    (b"[1 2 3]", "invalid JSON array: Expecting ',' delimiter at column 4"),
    (b'{"x": [1, 2, 3]}', "JSON: expected an array of numbers, got an object"),
    (b"\xff 1 2", "not valid UTF-8 (byte 0xff at column 1)"),
    (b"1 2 \xc3\x28", "not valid UTF-8 (byte 0xc3 at column 5)"),
    (LONG, "line too long (more than 1048576 bytes)"),
]
GOOD = [ROWS[0], ROWS[1], ROWS[2]]


def catalog_input(bad):
    """good, comment, good, BAD (line 4), good: the bad line is line 4."""
    head = text_of(GOOD[:1]) + "# comment\n" + text_of(GOOD[1:2])
    return head.encode() + bad + b"\r\n" + text_of(GOOD[2:]).encode()


@pytest.fixture(scope="module")
def good_prefix(cli_model_path):
    """What the CLI writes for the two good lines before the bad one."""
    result = invoke(["stream", "--model", cli_model_path], text_of(GOOD[:2]))
    assert result.exit_code == 0 and result.stdout.count("\n") == 2
    return result.stdout


def test_catalog_is_large_enough():
    assert len(CATALOG) >= 15 and len({bad for bad, _ in CATALOG}) == len(CATALOG)


@pytest.mark.parametrize("bad, message", CATALOG, ids=[m for _, m in CATALOG])
def test_bad_line_fails_after_earlier_output(cli_model_path, good_prefix, bad, message):
    result = invoke(["stream", "--model", cli_model_path], catalog_input(bad))
    assert result.exit_code == 1
    assert result.stdout == good_prefix  # everything before line 4, nothing after
    assert result.stderr == f"streamgen: error: <stdin>:4: {message}\n"


def test_bad_line_in_a_file_names_the_file(cli_model_path, good_prefix, tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_bytes(catalog_input(b"1 2"))
    result = invoke(["stream", "--model", cli_model_path, "--on-error", "fail", str(path)])
    assert (result.exit_code, result.stdout) == (1, good_prefix)
    assert result.stderr == f"streamgen: error: {path}:4: expected 3 numbers, got 2\n"


def test_skip_reports_every_bad_line_and_keeps_the_state(cli_model_path):
    good = [text_of([row]).encode() for row in ROWS]
    data, expected_errors, line = b"", [], 0
    for index, (bad, message) in enumerate(CATALOG):
        data += good[index % len(good)] + bad + b"\n"
        line += 2
        expected_errors.append(f"streamgen: error: <stdin>:{line}: {message}")
        if index == 5:  # a reset in the middle
            data += b"\n"
            line += 1
    clean = data
    for bad, _ in CATALOG:
        clean = clean.replace(bad + b"\n", b"", 1)
    skipped = invoke(["stream", "--model", cli_model_path, "--on-error", "skip"], data)
    reference_run = invoke(["stream", "--model", cli_model_path], clean)
    assert skipped.exit_code == reference_run.exit_code == 0
    # Skipped lines change nothing: the same outputs as without them.
    assert skipped.stdout == reference_run.stdout
    assert skipped.stdout.count("\n") == len(CATALOG) + 1
    assert skipped.stderr == "\n".join(
        expected_errors + [f"streamgen: skipped {len(CATALOG)} bad lines", ""])


def test_skip_count_singular(cli_model_path):
    result = invoke(["stream", "--model", cli_model_path, "--on-error", "skip"],
                    text_of(ROWS[:1]) + "1 2\n" + text_of(ROWS[1:2]))
    assert result.exit_code == 0 and result.stdout.count("\n") == 2
    assert result.stderr == ("streamgen: error: <stdin>:2: expected 3 numbers, got 2\n"
                             "streamgen: skipped 1 bad line\n")


def test_width_mismatch_with_the_model(tmp_path):
    path = str(tmp_path / "wide.keras")
    sg.StreamGen(4, 2, units=4, ir_size=4).save(path)
    result = invoke(["stream", "--model", path], text_of(ROWS[:2]))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "streamgen: error: <stdin>:1: expected 4 numbers, got 3\n"


# ---------------------------------------------------------------------- #
# stream: Ctrl-C (in-process; the real signal is in test_subprocess).
# ---------------------------------------------------------------------- #
class InterruptAfter(io.BytesIO):
    """stdin that raises KeyboardInterrupt after `lines` lines."""

    def __init__(self, data, lines):
        super().__init__(data)
        self.left = lines

    def readline(self, *args):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return super().readline(*args)


def test_keyboard_interrupt_exits_130_after_output(cli_model_path):
    data = text_of(ROWS).encode()
    result = invoke(["stream", "--model", cli_model_path], InterruptAfter(data, 3))
    assert result.exit_code == 130 and result.stderr == ""
    assert result.stdout == invoke(["stream", "--model", cli_model_path], text_of(ROWS[:3])).stdout


def test_width_mismatch_on_the_bundled_model_says_no_model_was_given():
    result = invoke(["stream"], "1 2\n")
    assert result.exit_code == 1
    assert result.stderr == ("streamgen: error: <stdin>:1: expected 3 numbers, got 2 (that is "
                             "the bundled model's size: no --model was given)\n")
