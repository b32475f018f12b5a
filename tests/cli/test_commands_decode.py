"""`streamgen decode` (and `train` on several files) through `CliRunner` and a subprocess."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from helpers import ragged_to_lists
from streamgen.cli.main import cli
from streamgen.data.text import frames_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLES = os.path.join(ROOT, "samples")
STREAMGEN = os.path.join(os.path.dirname(sys.executable), "streamgen")


def invoke(args, input=None):
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """40 sequences of the validation file in two files, with ids in the second."""
    folder = tmp_path_factory.mktemp("decode_data")
    with open(os.path.join(SAMPLES, "valid.jsonl")) as f:
        records = [json.loads(next(f)) for _ in range(40)]
    with open(folder / "a.jsonl", "w") as f:
        for r in records[:25]:
            f.write(json.dumps({"x": r["x"], "y": r["y"]}) + "\n")
    with open(folder / "b.jsonl", "w") as f:
        for n, r in enumerate(records[25:]):
            f.write(json.dumps({"id": f"b{n}", "x": r["x"]}) + "\n")
    inputs = [np.array(r["x"], np.float32) for r in records]
    return {"folder": folder, "a": str(folder / "a.jsonl"), "b": str(folder / "b.jsonl"),
            "inputs": inputs}


def check_output(text, model, inputs, ids=None):
    """Every line equals `model.decode` of its sequence, printed as `stream` prints it."""
    lines = text.splitlines()
    assert len(lines) == len(inputs)
    for n, (line, x) in enumerate(zip(lines, inputs)):
        record = json.loads(line)
        expected = ragged_to_lists(model.decode(x[None]))[0]
        assert [len(o) for o in record["y"]] == [len(o) for o in expected], f"line {n + 1}"
        for got, want in zip(record["y"], expected):
            np.testing.assert_allclose(np.reshape(got, (-1, 2)), np.reshape(want, (-1, 2)),
                                       atol=2e-5)
        outs = [frames_json(np.array(o, np.float32).reshape(-1, 2)) for o in record["y"]]
        assert line.endswith('"y":[' + ",".join(outs) + "]}")
        if ids is not None:
            assert record.get("id") == ids[n]


@pytest.mark.parametrize("kind", ["keras", "tflite"])
def test_decode_equals_decode_in_order_with_ids(data, cli_model_path, cli_model, cli_tflite,
                                                tmp_path, kind):
    model_path = cli_model_path if kind == "keras" else cli_tflite
    out = str(tmp_path / "out.jsonl")
    result = invoke(["decode", data["a"], str(data["folder"] / "b*.jsonl"), "-o", out,
                     "--model", model_path, "--batch-size", "16"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    with open(out) as f:
        check_output(f.read(), cli_model, data["inputs"],
                     ids=[None] * 25 + [f"b{n}" for n in range(15)])


def test_decode_to_stdout_with_options(data, cli_model_path, cli_model):
    result = invoke(["decode", data["a"], "-o", "-", "--model", cli_model_path,
                     "--stop", "none", "--max-steps", "2"])
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 25
    assert all(len(o) == 2 for line in lines for o in json.loads(line)["y"])


def test_decode_bundled_model_equals_stream(data):
    """The first sequence through `decode` and through `stream`: the same text."""
    result = invoke(["decode", data["a"], "-o", "-"])
    first = json.loads(result.stdout.splitlines()[0])["y"]
    lines = "\n".join(" ".join(map(str, v)) for v in data["inputs"][0].tolist()) + "\n"
    streamed = [json.loads(line) for line in invoke(["stream"], input=lines).stdout.splitlines()]
    assert [len(o) for o in streamed] == [len(o) for o in first]
    for got, want in zip(first, streamed):  # the 6th digit may differ: batch of 25 vs 1
        np.testing.assert_allclose(np.reshape(got, (-1, 2)), np.reshape(want, (-1, 2)),
                                   atol=2e-5)


def bad_file(tmp_path, data):
    with open(data["a"]) as f:
        lines = f.read().splitlines()[:6]
    lines[1] = '{"x": [[1, 2]]}'
    lines[3] = "[" * 1000 + "]" * 1000
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_decode_bad_records_fail(data, cli_model_path, tmp_path):
    path = bad_file(tmp_path, data)
    out = tmp_path / "out.jsonl"
    result = invoke(["decode", path, "-o", str(out), "--model", cli_model_path])
    assert result.exit_code == 1
    assert result.stderr == (f"streamgen: error: {path}:2: field 'x[0]': width 2, expected 3 "
                             f"(input_size=3); {out} was not written\n")
    assert not out.exists()  # complete or absent: nothing of a failed run


def test_decode_bad_records_skip(data, cli_model_path, cli_model, tmp_path):
    path = bad_file(tmp_path, data)
    result = invoke(["decode", path, "-o", "-", "--model", cli_model_path, "--on-error", "skip"])
    assert result.exit_code == 0
    assert result.stderr == (
        f"streamgen: error: {path}:2: field 'x[0]': width 2, expected 3 (input_size=3)\n"
        f"streamgen: error: {path}:4: bad JSON: nested too deeply\n"
        "streamgen: skipped 2 bad records\n")
    keep = [0, 2, 4, 5]
    check_output(result.stdout, cli_model, [data["inputs"][n] for n in keep])


@pytest.mark.parametrize("args, error", [
    (["nothing-*.jsonl", "-o", "-"], "Invalid value for 'DATA...': nothing-*.jsonl: no file "
                                     "matches this pattern"),
    (["missing.jsonl", "-o", "-"], "Invalid value for 'DATA...': missing.jsonl: no such file"),
    (["-o", "-"], "Missing argument 'DATA...'."),
    (["{a}", "-o", "-", "--workers", "2"], "--workers needs --ray."),
    (["{a}", "-o", "-", "--batch-size", "0"],
     "Invalid value for '--batch-size': 0 is not in the range x>=1."),
])
def test_decode_usage_errors(data, args, error):
    result = invoke(["decode", *[a.format(a=data["a"]) for a in args]])
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: {error}\n")


@pytest.mark.slow
def test_no_progress_bar_when_stderr_is_not_a_terminal(data, cli_tflite, tmp_path):
    """A real process, stderr a pipe: nothing on stderr."""
    out = tmp_path / "out.jsonl"
    run = subprocess.run([STREAMGEN, "decode", data["a"], "--model", cli_tflite, "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")
    assert len(out.read_text().splitlines()) == 25


@pytest.mark.slow
def test_progress_bar_on_a_terminal(data, cli_tflite, tmp_path):
    """stderr a pseudo-terminal: the bar, its counts and rate, on stderr only."""
    import pty

    primary, secondary = pty.openpty()
    out = tmp_path / "out.jsonl"
    run = subprocess.run([STREAMGEN, "decode", data["a"], data["b"], "--model", cli_tflite,
                          "-o", str(out), "--batch-size", "8"],
                         stdout=subprocess.PIPE, stderr=secondary, timeout=120)
    os.close(secondary)
    shown = os.read(primary, 65536).decode()
    os.close(primary)
    assert run.returncode == 0 and run.stdout == b""
    assert "40/40 sequences" in shown and "steps/s" in shown and "s left" in shown


@pytest.mark.slow  # trains a model
def test_train_on_several_files_and_globs(data, tmp_path):
    out = str(tmp_path / "m.keras")
    result = invoke(["train", data["a"], str(data["folder"] / "a*.jsonl"), "-o", out,
                     "--epochs", "1", "--units", "4", "--ir-size", "4", "--seed", "0"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"saved {out} (1 epoch, loss ")
    import keras

    model = keras.models.load_model(out, compile=False)
    assert (model.input_size, model.output_size) == (3, 2)


@pytest.mark.slow  # trains a model
def test_train_bad_record_in_a_later_file(data, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"x": [[1, 2, 3]], "y": [[[1, 2, 3]]]}\n')
    out = str(tmp_path / "m.keras")
    result = invoke(["train", data["a"], str(bad), "-o", out, "--epochs", "1",
                     "--units", "4", "--ir-size", "4"])
    assert result.exit_code == 1
    assert result.stderr == (f"streamgen: error: {bad}:1: field 'y[0][0]': width 3, expected 2 "
                             f"(as in field 'y[1][0]' on line 1 of {data['a']}); "
                             f"{out} was not written\n")


def test_stream_line_of_1000_nested_brackets(cli_model_path):
    """issue 11 item 7: the reader reports nesting as one line, no RecursionError."""
    result = invoke(["stream", "--model", cli_model_path],
                    input="[" * 1000 + "]" * 1000 + "\n0.5 0 0.1\n")
    assert result.exit_code == 1
    assert result.stderr == "streamgen: error: <stdin>:1: invalid JSON array: nested too deeply\n"


@pytest.mark.slow
@pytest.mark.ray
def test_decode_on_a_local_ray_cluster_equals_local(data, cli_model_path, ray_cluster, tmp_path):
    """Ray Data over 2 actors: the shards, concatenated, are the local output."""
    local = invoke(["decode", data["a"], data["b"], "--model", cli_model_path, "-o", "-",
                    "--batch-size", "8"])
    assert local.exit_code == 0
    out = tmp_path / "shards"
    result = invoke(["decode", "--ray", data["a"], data["b"], "--model", cli_model_path,
                     "-o", str(out), "--batch-size", "8", "--workers", "2"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    names = sorted(os.listdir(out))
    assert names == [f"part-{n:05d}.jsonl" for n in range(3)]  # 16 + 9 lines, then 15
    merged = "".join((out / name).read_text() for name in names)
    assert merged == local.stdout  # same batches (8) -> the same bytes


@pytest.mark.slow
@pytest.mark.ray
def test_decode_ray_bad_records(data, cli_tflite, ray_cluster, tmp_path):
    """The LiteRT export (an actor without TensorFlow; the .keras model on
    Ray is tested above), one actor."""
    path = bad_file(tmp_path, data)
    out = tmp_path / "shards"
    result = invoke(["decode", "--ray", "local", path, "--model", cli_tflite, "-o", str(out),
                     "--on-error", "skip", "--batch-size", "2", "--workers", "1"])
    assert result.exit_code == 0
    assert result.stderr == (
        f"streamgen: error: {path}:2: field 'x[0]': width 2, expected 3 (input_size=3)\n"
        f"streamgen: error: {path}:4: bad JSON: nested too deeply\n"
        "streamgen: skipped 2 bad records\n")
    lines = "".join(p.read_text() for p in sorted(out.iterdir())).splitlines()
    assert len(lines) == 4
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = invoke(["decode", "--ray", path, "--model", cli_tflite, "-o", str(out),
                     "--overwrite", "--batch-size", "2", "--workers", "1"])
    assert result.exit_code == 1
    assert result.stderr == (f"streamgen: error: {path}:2: field 'x[0]': width 2, expected 3 "
                             f"(input_size=3); {out} was not written\n")
    # the same rule as locally: a failed run leaves the folder as it was, no temporary
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "shards"]


@pytest.mark.slow
@pytest.mark.ray
def test_decode_ray_refuses_a_used_folder(data, cli_tflite, ray_cluster, tmp_path):
    """Stale shards are never mixed in: refused, or replaced whole with --overwrite
    (the LiteRT export: an actor without TensorFlow)."""
    out = tmp_path / "shards"
    out.mkdir()
    for n in range(5):
        (out / f"part-{n:05d}.jsonl").write_text("stale\n")
    result = invoke(["decode", "--ray", data["a"], "--model", cli_tflite, "-o", str(out)])
    assert result.exit_code == 2
    assert "is not empty; pass --overwrite" in result.stderr
    assert sorted(os.listdir(out)) == [f"part-{n:05d}.jsonl" for n in range(5)]
    result = invoke(["decode", "--ray", data["a"], "--model", cli_tflite, "-o", str(out),
                     "--overwrite", "--batch-size", "16", "--workers", "1"])
    assert (result.exit_code, result.stderr) == (0, "")
    lines = "".join(p.read_text() for p in sorted(out.iterdir())).splitlines()
    assert len(lines) == 25 and "stale" not in lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]
    # a folder that holds an input is never cleared
    result = invoke(["decode", "--ray", str(tmp_path / "shards" / "part-00000.jsonl"),
                     "--model", cli_tflite, "-o", str(tmp_path), "--overwrite"])
    assert result.exit_code == 2 and "holds the input" in result.stderr


# ---------------------------------------------------------------------- #
# issue 21: inputs protected, outputs complete or absent, strict JSON.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("naming", ["same", "relative", "symlink", "hardlink", "glob"])
def test_decode_never_writes_over_an_input(data, cli_model_path, tmp_path, monkeypatch, naming):
    """Every way of naming an input as OUT is a usage error; the input survives."""
    source = tmp_path / "in.jsonl"
    source.write_text(open(data["a"]).read())
    before = source.read_bytes()
    args, out = [str(source)], str(source)
    if naming == "relative":
        monkeypatch.chdir(tmp_path)
        args, out = ["in.jsonl"], "./sub/../in.jsonl"
        (tmp_path / "sub").mkdir()
    elif naming == "symlink":
        out = str(tmp_path / "link.jsonl")
        os.symlink(source, out)
    elif naming == "hardlink":
        out = str(tmp_path / "hard.jsonl")
        os.link(source, out)
    elif naming == "glob":
        other = tmp_path / "in2.jsonl"
        other.write_text(before.decode())
        args, out = [str(tmp_path / "in*.jsonl")], str(other)
    result = invoke(["decode", *args, "-o", out, "--model", cli_model_path])
    assert result.exit_code == 2
    assert "Invalid value for '--output' / '-o'" in result.stderr and "is the input" in result.stderr
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_decode_failure_leaves_the_previous_output(data, cli_model_path, tmp_path):
    """A bad record with --on-error fail: the old OUT byte for byte, no temporary file."""
    path = bad_file(tmp_path, data)
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"previous\n")
    result = invoke(["decode", path, "-o", str(out), "--model", cli_model_path])
    assert result.exit_code == 1
    assert result.stderr == (f"streamgen: error: {path}:2: field 'x[0]': width 2, expected 3 "
                             f"(input_size=3); {out} was not written\n")
    assert out.read_bytes() == b"previous\n"
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl", "out.jsonl"]


def test_decode_disk_full_leaves_the_previous_output(data, cli_model_path, tmp_path,
                                                     monkeypatch):
    """A write that fails (ENOSPC) names OUT, leaves the old file and no temporary."""
    import errno

    from streamgen import outputs

    out = tmp_path / "out.jsonl"
    out.write_bytes(b"previous\n")
    class Full:
        def __init__(self, inner):
            self.inner = inner
            self.writes = 0

        def write(self, text):
            self.writes += 1
            if self.writes > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.inner.write(text)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    real_init = outputs.AtomicText.__init__

    def init(self, path):
        real_init(self, path)
        self.file = Full(self.file)

    monkeypatch.setattr(outputs.AtomicText, "__init__", init)
    result = invoke(["decode", data["a"], "-o", str(out), "--model", cli_model_path,
                     "--batch-size", "4"])
    assert result.exit_code == 1
    assert result.stderr == (f"streamgen: error: {out}: cannot write: No space left on device; "
                             f"{out} was not written\n")
    assert out.read_bytes() == b"previous\n"
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


def test_decode_output_follows_the_umask(data, cli_model_path, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "out.jsonl"
        result = invoke(["decode", data["a"], "-o", str(out), "--model", cli_model_path])
    finally:
        os.umask(old)
    assert result.exit_code == 0
    assert os.stat(out).st_mode & 0o777 == 0o640


@pytest.mark.parametrize("kind", ["keras", "tflite"])
def test_decode_ids_json_cannot_write_are_bad_records(cli_model_path, cli_tflite, tmp_path,
                                                      kind):
    """An id 1e400 (infinity), NaN or a lone surrogate: a bad record with file:line."""
    model = cli_model_path if kind == "keras" else cli_tflite
    path = tmp_path / "ids.jsonl"
    path.write_text('{"id": 1, "x": [[0.1, 0.2, 0.3]]}\n'
                    '{"id": 1e400, "x": [[0.1, 0.2, 0.3]]}\n'
                    '{"id": "\\ud800", "x": [[0.1, 0.2, 0.3]]}\n'
                    '{"id": [NaN], "x": [[0.1, 0.2, 0.3]]}\n'
                    '{"id": "\\ud83d\\ude00", "x": [[0.1, 0.2, 0.3]]}\n')
    result = invoke(["decode", str(path), "-o", "-", "--model", model, "--on-error", "skip"])
    assert result.exit_code == 0
    assert result.stderr == (
        f"streamgen: error: {path}:2: field 'id': holds a number that is not finite (NaN, "
        "or beyond float64 such as 1e400), which JSON cannot write\n"
        f"streamgen: error: {path}:3: field 'id': holds a lone surrogate (such as \\ud800), "
        "which UTF-8 cannot write\n"
        f"streamgen: error: {path}:4: field 'id': holds a number that is not finite (NaN, "
        "or beyond float64 such as 1e400), which JSON cannot write\n"
        "streamgen: skipped 3 bad records\n")
    ids = [strict_json(line)["id"] for line in result.stdout.splitlines()]
    assert ids == [1, "\U0001f600"]
    result = invoke(["decode", str(path), "-o", "-", "--model", model])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"streamgen: error: {path}:2: field 'id'")
    assert len(result.stdout.splitlines()) == 1


def strict_json(line):
    """`json.loads` that refuses NaN and Infinity (what other parsers do)."""
    def refuse(token):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(line, parse_constant=refuse)


@pytest.mark.slow
def test_decode_into_a_closed_pipe_is_quiet(data, cli_tflite, tmp_path):
    """`decode -o - | head -1`: one line, nothing on stderr (as `stream`)."""
    big = tmp_path / "big.jsonl"
    big.write_text(open(data["a"]).read() * 40)
    run = subprocess.run(f"{STREAMGEN} decode {big} --model {cli_tflite} -o - "
                         "--batch-size 8 | head -1", shell=True, capture_output=True,
                         text=True, timeout=120)
    assert len(run.stdout.splitlines()) == 1
    assert run.stderr == ""


@pytest.mark.slow  # three decodes, a FIFO writer thread (~7 s)
def test_decode_reads_gzip_fifo_and_stdin(data, cli_model_path, tmp_path):
    """A .jsonl.gz, a FIFO and '-' (stdin) give the plain file's output."""
    import gzip
    import threading

    plain = invoke(["decode", data["a"], "-o", "-", "--model", cli_model_path])
    assert plain.exit_code == 0
    text = open(data["a"], "rb").read()
    zipped = tmp_path / "a.jsonl.gz"
    zipped.write_bytes(gzip.compress(text))
    result = invoke(["decode", str(zipped), "-o", "-", "--model", cli_model_path])
    assert (result.exit_code, result.stderr, result.stdout) == (0, "", plain.stdout)
    result = invoke(["decode", "-", "-o", "-", "--model", cli_model_path], input=text)
    assert (result.exit_code, result.stderr, result.stdout) == (0, "", plain.stdout)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(text))
    writer.start()
    out = tmp_path / "out.jsonl"
    result = invoke(["decode", str(fifo), "-o", str(out), "--model", cli_model_path])
    writer.join(10)
    assert (result.exit_code, result.stderr) == (0, "")
    assert out.read_text() == plain.stdout
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(text)[:200])
    result = invoke(["decode", str(broken), "-o", str(out), "--model", cli_model_path])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"streamgen: error: {broken}: cannot read: ")
    assert out.read_text() == plain.stdout  # the previous output, untouched


@pytest.mark.slow  # trains a model
def test_train_and_evaluate_read_gzip(data, cli_model_path, tmp_path):
    import gzip

    zipped = tmp_path / "a.jsonl.gz"
    zipped.write_bytes(gzip.compress(open(data["a"], "rb").read()))
    plain = invoke(["evaluate", data["a"], "--model", cli_model_path])
    result = invoke(["evaluate", str(zipped), "--model", cli_model_path])
    assert (result.exit_code, result.stdout) == (0, plain.stdout)
    out = str(tmp_path / "m.keras")
    result = invoke(["train", str(zipped), "-o", out, "--epochs", "1", "--units", "4",
                     "--ir-size", "4", "--seed", "0"])
    assert result.exit_code == 0, result.stderr


def test_model_files_follow_the_umask(tmp_path):
    """saving.atomic_path (train's and export's writes): 0644 under umask 022, not 0600."""
    from streamgen import saving

    old = os.umask(0o022)
    try:
        saving.write_bytes(tmp_path / "m.tflite", b"model")
        with saving.atomic_path(tmp_path / "m.keras") as temporary:
            with open(temporary, "wb") as f:
                f.write(b"zip")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.tflite").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "m.keras").st_mode & 0o777 == 0o644


def _wait_for(condition, timeout=120.0):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_decode_interrupted_leaves_the_previous_output(data, cli_tflite, tmp_path):
    """Ctrl-C mid-run: status 130, the count and OUT on stderr, OUT byte for byte."""
    import signal

    big = tmp_path / "big.jsonl"
    big.write_text(open(data["a"]).read() * 400)  # 10,000 records
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"previous\n")
    process = subprocess.Popen([STREAMGEN, "decode", str(big), "--model", cli_tflite,
                                "-o", str(out), "--batch-size", "8"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    temporary = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl.")
                         and p.stat().st_size > 0]
    assert _wait_for(temporary)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.startswith("streamgen: interrupted after ")
    assert stderr.endswith(f" records; {out} was not written (an existing file is left as "
                           "it was)\n")
    assert out.read_bytes() == b"previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl", "out.jsonl"]


_READER_SCRIPT = r"""
import sys
from streamgen.offline import decode as offline
def progress(sequences, steps):
    print("started", flush=True)
    import time; time.sleep(600)
offline.decode_jsonl(sys.argv[1], [sys.argv[2]], "/dev/null", readers=1, batch_size=8,
                     progress=progress)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_reader_process_dies_with_its_parent(data, cli_tflite, tmp_path, signal_name):
    import signal
    import sys

    big = tmp_path / "big.jsonl"
    big.write_text(open(data["a"]).read() * 400)
    process = subprocess.Popen([sys.executable, "-c", _READER_SCRIPT, cli_tflite, str(big)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout.readline() == "started\n"
    children = [c for task in os.listdir(f"/proc/{process.pid}/task")  # any thread's
                for c in open(f"/proc/{process.pid}/task/{task}/children").read().split()]
    assert children, "no reader process"
    process.send_signal(getattr(signal, signal_name))
    process.wait(30)
    try:
        assert _wait_for(lambda: not any(os.path.exists(f"/proc/{c}") and
                                         open(f"/proc/{c}/stat").read().split()[2] != "Z"
                                         for c in children), timeout=10)
    finally:  # an orphan (the defect) must not outlive the test
        for child in children:
            try:
                os.kill(int(child), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.mark.parametrize("stop", [[], ["--threshold", "1"], ["--threshold", "0.01"]])
def test_extreme_inputs_same_on_tensorflow_and_litert(cli_model_path, cli_tflite, tmp_path,
                                                      stop):
    """Inputs up to float32's edge: strict JSON only, each record either decoded
    or named in one error line, and the same lines on both runtimes.

    At the edge (1e30 and up) the runtimes' kernels may part: LiteRT's XNNPACK
    kernels overflow to NaN on some CPUs where TensorFlow's saturate (seen on
    an AMD EPYC, not on a Xeon). There a record may be decoded by one runtime
    and refused by name by the other; below the edge both decode it alike.
    """
    path = tmp_path / "extreme.jsonl"
    values = [1e38, -1e38, 3.4e38, -3.4e38, 1e30, 1e-38, 0.0]
    with open(path, "w") as f:
        for n, v in enumerate(values):
            f.write(json.dumps({"id": n, "x": [[v, 0, 0], [v, v, v], [0.1, 0.2, 0.3]]}) + "\n")
    results = [invoke(["decode", str(path), "-o", "-", "--model", model, "--on-error", "skip",
                       *stop]) for model in (cli_model_path, cli_tflite)]
    not_finite = re.compile(rf"streamgen: error: {re.escape(str(path))}:(\d+): step 0: the "
                            r"model's frames are not finite \(NaN or infinity\); inputs this "
                            r"large are beyond what the model computes in float32")
    decoded = []
    for result in results:
        assert result.exit_code == 0
        lines = {r["id"]: r["y"] for r in map(strict_json, result.stdout.splitlines())}
        errors = result.stderr.splitlines()
        refused = {int(not_finite.fullmatch(e).group(1)) - 1 for e in errors[:-1]}
        if refused:
            assert errors[-1] == f"streamgen: skipped {len(refused)} bad record" + \
                ("s" if len(refused) > 1 else "")
        else:
            assert errors == []
        assert sorted(lines) == sorted(set(range(len(values))) - refused)
        assert all(abs(values[n]) >= 1e30 for n in refused)
        decoded.append(lines)
    tf_lines, lite_lines = decoded
    for n in set(tf_lines) & set(lite_lines):
        got, want = lite_lines[n], tf_lines[n]
        assert [len(o) for o in got] == [len(o) for o in want]
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.reshape(a, (-1, 2)), np.reshape(b, (-1, 2)),
                                       rtol=1e-4, atol=1e-4)
