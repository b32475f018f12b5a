"""Sampling in the CLI: `--sampler`, `--temperature`, `--top-k`, `--top-p`,
`--seed`, `--stop sample`; `decode --seed`, `evaluate --samples`,
`plot --samples`, `info`'s sampler.

Outputs are checked against the library (`sg.Stream`, `sg.decode_sequences`,
`streamgen.offline.evaluation`) with the same seeds; every usage error has
its exit status (2) and message.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import streamgen as sg
from streamgen import samplers
from streamgen.cli import common
from streamgen.cli.main import cli
from streamgen.data.text import frames_json
from streamgen.offline import evaluation

from helpers import assert_jsonl_close, toy_data

LINES = "0.5 0 0.1\n1 1 -0.5\n\n0.2 0.1 0.9\n-1 0.3 0.3\n0 0 1\n"


def invoke(args, input=None):
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


def reference(stream, text=LINES):
    """What `streamgen stream` prints for `text` through the library's `stream`."""
    lines = []
    for line in text.splitlines():
        if not line.strip():
            stream.reset()
            lines.append("")
        else:
            lines.append(frames_json(stream.step(np.array(line.split(), np.float32))))
    return "\n".join(lines) + "\n"


def lengths(text):
    return [len(json.loads(line)) if line else None for line in text.splitlines()]


# ---------------------------------------------------------------------- #
# stream
# ---------------------------------------------------------------------- #
@pytest.mark.slow  # five sampled streams (~10 s)
def test_stream_seed_repeats_equals_the_library_and_seeds_differ(cli_mdn_path):
    args = ["stream", "--model", cli_mdn_path, "--sampler", "random"]
    first = invoke([*args, "--seed", "7"], LINES)
    again = invoke([*args, "--seed", "7"], LINES)
    other = invoke([*args, "--seed", "8"], LINES)
    assert (first.exit_code, first.stderr) == (0, "")
    assert first.stdout == again.stdout
    assert other.stdout != first.stdout
    runtime = sg.open_runtime(cli_mdn_path)
    assert first.stdout == reference(sg.Stream(runtime, sampler=samplers.Random(), seed=7))
    # Greedy (no sampling option) is another output again.
    greedy = invoke(["stream", "--model", cli_mdn_path, "--seed", "7"], LINES)
    assert greedy.stdout == reference(sg.Stream(runtime, seed=7)) != first.stdout


@pytest.mark.parametrize("options, sampler", [
    (["--top-k", "2", "--temperature", "0.5"], samplers.TopK(2, temperature=0.5)),
    (["--top-p", "0.8"], samplers.TopP(0.8)),
    (["--temperature", "1.5"], samplers.Random(1.5)),
    (["--sampler", "top-k", "--top-k", "1"], samplers.TopK(1)),
])
def test_stream_implied_samplers(cli_mdn_path, options, sampler):
    result = invoke(["stream", "--model", cli_mdn_path, *options, "--seed", "3"], LINES)
    assert (result.exit_code, result.stderr) == (0, "")
    runtime = sg.open_runtime(cli_mdn_path)
    assert result.stdout == reference(sg.Stream(runtime, sampler=sampler, seed=3))


def test_sampler_spec_resolves_the_options():
    assert common.sampler_spec(None) is None
    assert common.sampler_spec(None, temperature=0.5) == {
        "class_name": "Random", "config": {"temperature": 0.5}}
    assert common.sampler_spec(None, top_k=3) == {
        "class_name": "TopK", "config": {"k": 3, "temperature": 1.0}}
    assert common.sampler_spec("top-p", 2.0, top_p=0.5) == {
        "class_name": "TopP", "config": {"p": 0.5, "temperature": 2.0}}
    assert common.sampler_spec("greedy") == {"class_name": "Greedy", "config": {}}


@pytest.mark.slow  # a LiteRT conversion, sampled streams (~10 s)
def test_stop_sample_on_keras_and_tflite(cli_mdn_path, cli_mdn_tflite):
    options = ["--stop", "sample", "--threshold", "0.5", "--seed", "11"]
    keras_run = invoke(["stream", "--model", cli_mdn_path, *options], LINES)
    lite_run = invoke(["stream", "--model", cli_mdn_tflite, *options], LINES)
    assert (keras_run.exit_code, keras_run.stderr) == (0, "")
    assert (lite_run.exit_code, lite_run.stderr) == (0, "")
    stop = [sg.StopSample(0.5)]
    assert keras_run.stdout == reference(sg.Stream(sg.open_runtime(cli_mdn_path), stop=stop,
                                                   seed=11))
    assert lite_run.stdout == reference(sg.Stream(sg.open_runtime(cli_mdn_tflite), stop=stop,
                                                  seed=11))
    # TF and LiteRT draw the same STOPs: the same lengths, frames to round-off.
    assert lengths(keras_run.stdout) == lengths(lite_run.stdout)
    for a, b in zip(keras_run.stdout.splitlines(), lite_run.stdout.splitlines()):
        if a:
            np.testing.assert_allclose(np.reshape(json.loads(a), (-1, 2)),
                                       np.reshape(json.loads(b), (-1, 2)), atol=1e-4)
    # The sampled STOP depends on the seed (the lengths of 5 steps over 3 seeds).
    runs = {tuple(lengths(invoke(["stream", "--model", cli_mdn_tflite, "--stop", "sample",
                                  "--seed", str(s)], LINES).stdout)) for s in (1, 2, 3)}
    assert len(runs) > 1


# ---------------------------------------------------------------------- #
# Usage errors (exit status 2, the message; before the model is opened
# where the options alone are wrong).
# ---------------------------------------------------------------------- #
USAGE_ERRORS = [
    (["--top-k", "2", "--top-p", "0.5"], "Error: --top-k cannot be used with --top-p"),
    (["--sampler", "top-k"], "Error: Invalid value for '--sampler': top-k needs --top-k K."),
    (["--sampler", "top-p", "--temperature", "2"],
     "Error: Invalid value for '--sampler': top-p needs --top-p P."),
    (["--sampler", "greedy", "--temperature", "0.5"],
     "Error: --temperature cannot be used with --sampler greedy"),
    (["--sampler", "random", "--top-k", "3"],
     "Error: --top-k cannot be used with --sampler random (it needs --sampler top-k)."),
    (["--sampler", "top-k", "--top-k", "3", "--top-p", "0.5"],
     "Error: --top-k cannot be used with --top-p"),
    (["--sampler", "sometimes"], "Error: Invalid value for '--sampler': 'sometimes' is not one of"),
    (["--temperature", "0"], "Error: Invalid value for '--temperature': 0.0 is not in the range x>0."),
    (["--temperature", "nan"], "Error: Invalid value for '--temperature': 'nan' is not a finite"),
    (["--top-k", "0"], "Error: Invalid value for '--top-k': 0 is not in the range x>=1."),
    (["--top-p", "0"], "Error: Invalid value for '--top-p': 0.0 is not in the range 0<x<=1."),
    (["--top-p", "1.5"], "Error: Invalid value for '--top-p': 1.5 is not in the range 0<x<=1."),
    (["--seed", "-1"], "Error: Invalid value for '--seed': -1 is not in the range"),
    (["--seed", "4294967296"], "Error: Invalid value for '--seed': 4294967296 is not in the range"),
    (["--stop", "sample", "--threshold", "0"],
     "Error: Invalid value for '--threshold': 0 is not a temperature > 0 (needed by --stop "
     "sample)."),
    (["--stop", "sample", "--threshold", "-2"],
     "Error: Invalid value for '--threshold': -2 is not a temperature > 0"),
]


@pytest.mark.parametrize("options, message", USAGE_ERRORS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else None)
def test_usage_errors(options, message, cli_mdn_path):
    result = invoke(["stream", "--model", cli_mdn_path, *options], LINES)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


MSE_ERROR = ("Error: Invalid value for '--sampler': {name} cannot draw this model's 'mse' "
             "frames (frame_loss=mse): only greedy decodes them; sample a model trained with "
             "--frame-loss mdn or categorical.\n")


@pytest.mark.parametrize("options, name", [
    (["--sampler", "random"], "random"), (["--temperature", "0.5"], "random"),
    (["--top-p", "0.9"], "top-p"), (["--sampler", "top-k", "--top-k", "2"], "top-k"),
])
@pytest.mark.parametrize("kind", ["keras", "tflite"])
def test_a_sampler_that_does_not_fit_the_frames(options, name, kind, cli_model_path,
                                                cli_tflite):
    path = cli_model_path if kind == "keras" else cli_tflite
    result = invoke(["stream", "--model", path, *options], LINES)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.endswith(MSE_ERROR.format(name=name))
    # greedy and --stop sample are for every model
    result = invoke(["stream", "--model", path, "--sampler", "greedy", "--stop", "sample",
                     "--seed", "1"], LINES)
    assert (result.exit_code, result.stderr) == (0, "")


@pytest.mark.parametrize("command", ["decode", "plot", "evaluate"])
def test_every_command_takes_the_bundle(command, cli_model_path, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"x": [[0.5, 0, 0.1]], "y": [[]]}\n')
    args = {"decode": ["decode", str(data), "-o", "-"],
            "plot": ["plot", "-o", str(tmp_path / "p.png"), str(data)],
            "evaluate": ["evaluate", str(data), "--samples", "2"]}[command]
    result = invoke([*args, "--model", cli_model_path, "--top-k", "2", "--top-p", "0.5"])
    assert result.exit_code == 2 and "Error: --top-k cannot be used with --top-p" in result.stderr
    result = invoke([*args, "--model", cli_model_path, "--sampler", "random"])
    assert result.exit_code == 2
    assert result.stderr.endswith(MSE_ERROR.format(name="random"))


def test_evaluate_sampling_options_need_samples(cli_mdn_path, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"x": [[0.5, 0, 0.1]], "y": [[]]}\n')
    result = invoke(["evaluate", str(data), "--model", cli_mdn_path, "--seed", "1"])
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "Error: the sampling options (--sampler, --temperature, --top-k, --top-p, --seed) "
        "need --samples N.\n")


# ---------------------------------------------------------------------- #
# decode --seed
# ---------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """7 sequences of 1..7 steps, the last three with ids."""
    inputs, targets = toy_data(n=7, seed=5)
    path = tmp_path_factory.mktemp("sampling_data") / "data.jsonl"
    with open(path, "w") as f:
        for n, (x, y) in enumerate(zip(inputs, targets)):
            record = {"x": x.tolist(), "y": [o.tolist() for o in y]}
            if n >= 4:
                record = {"id": f"r{n}", **record}
            f.write(json.dumps(record) + "\n")
    return {"path": str(path), "inputs": inputs, "targets": targets}


@pytest.mark.slow  # six decodes, XLA compiles (~18 s)
def test_decode_seed_is_batch_size_invariant(records, cli_mdn_path):
    args = ["decode", records["path"], "--model", cli_mdn_path, "-o", "-", "--top-p", "0.9",
            "--stop", "sample"]
    runs = {size: invoke([*args, "--seed", "5", "--batch-size", size]) for size in ("1", "3", "64")}
    for result in runs.values():
        assert (result.exit_code, result.stderr) == (0, "")
    assert_jsonl_close(runs["3"].stdout, runs["1"].stdout)
    assert_jsonl_close(runs["64"].stdout, runs["1"].stdout)
    assert invoke([*args, "--seed", "6"]).stdout != runs["1"].stdout
    # Record 0 has the seed itself: what `stream --seed 5` prints for it.
    first = json.loads(runs["1"].stdout.splitlines()[0])["y"]
    text = "\n".join(" ".join(map(str, v)) for v in records["inputs"][0].tolist()) + "\n"
    streamed = invoke(["stream", "--model", cli_mdn_path, "--top-p", "0.9", "--stop", "sample",
                       "--seed", "5"], text)
    assert [json.loads(line) for line in streamed.stdout.splitlines()] == first
    # ... and the library's decode_jsonl with the same seed (and XLA, as the
    # CLI), in its own batches.
    import io

    out = io.StringIO()
    runtime = sg.open_runtime(sg.load_model(cli_mdn_path), stop=[sg.StopSample()],
                              jit_compile=True)
    sg.decode_jsonl(runtime, [records["path"]], out, sampler=samplers.TopP(0.9), seed=5)
    assert_jsonl_close(out.getvalue(), runs["1"].stdout)


@pytest.mark.slow
@pytest.mark.ray
def test_decode_ray_seed_equals_local(records, cli_mdn_path, ray_cluster, tmp_path):
    """With --seed, the shards are the local output: byte for byte with the
    same batches (3 records), to round-off with other batches. One actor
    decodes the shards in turn (each actor starts TensorFlow; two actors are
    tested in test_commands_decode.py)."""
    args = [records["path"], "--model", cli_mdn_path, "--sampler", "random", "--stop",
            "sample", "--seed", "9"]
    local = invoke(["decode", *args, "-o", "-", "--batch-size", "3"])
    assert local.exit_code == 0
    out = tmp_path / "shards"
    result = invoke(["decode", "--ray", *args, "-o", str(out), "--batch-size", "3",
                     "--workers", "1"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    merged = "".join(p.read_text() for p in sorted(out.iterdir()))
    assert merged == local.stdout
    assert_jsonl_close(merged, invoke(["decode", *args, "-o", "-", "--batch-size", "64"]).stdout)


# ---------------------------------------------------------------------- #
# evaluate --samples, plot --samples, info
# ---------------------------------------------------------------------- #
@pytest.mark.slow  # sampled evaluations, XLA compiles (~9 s)
def test_evaluate_samples_prints_the_library_length_tv(records, cli_mdn_path):
    result = invoke(["evaluate", records["path"], "--model", cli_mdn_path, "--samples", "3",
                     "--stop", "sample", "--seed", "2"])
    assert (result.exit_code, result.stderr) == (0, "")
    figures = json.loads(result.stdout)
    runtime = sg.open_runtime(cli_mdn_path, stop=[sg.StopSample()])
    expected = evaluation.sampled_length_tv(runtime, records["inputs"], records["targets"], 3,
                                            sampler=samplers.Random(), seed=2)
    assert figures["length_tv"] == common.rounded(expected)
    assert 0.0 < figures["length_tv"] <= 1.0
    # The other figures stay greedy: as without --samples.
    plain = json.loads(invoke(["evaluate", records["path"], "--model", cli_mdn_path,
                               "--stop", "sample"]).stdout)
    assert {k: v for k, v in figures.items() if k != "length_tv"} == plain


def test_plot_samples_writes_a_png(cli_mdn_path, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "in.txt").write_text(LINES)
    out = tmp_path / "s.png"
    result = invoke(["plot", str(tmp_path / "in.txt"), "--model", cli_mdn_path, "--samples", "3",
                     "--seed", "4", "--stop", "sample", "-o", str(out)])
    assert (result.exit_code, result.stderr) == (0, "")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The bold line is the greedy one (greedy frames, the STOPs of seed 4).
    stream = sg.Stream(sg.open_runtime(cli_mdn_path), stop=[sg.StopSample()], seed=4)
    greedy = [len(o) for o in stream.feed(np.array([[0.5, 0, 0.1], [1, 1, -0.5]], np.float32))]
    assert result.stdout == (f"wrote {out}: 2 outer steps, lengths "
                             f"{' '.join(map(str, greedy))}, 3 samples\n")


def test_info_shows_the_default_sampler(cli_mdn_path, monkeypatch):
    result = invoke(["info", "--model", cli_mdn_path])
    assert "frame_loss     mdn, 3 mixtures\n" in result.stdout
    assert "sampler" not in result.stdout or "sampler        Greedy()\n" in result.stdout
    describe = sg.TFRuntime.describe
    monkeypatch.setattr(sg.TFRuntime, "describe", lambda self: {
        **describe(self), "sampler": {"class_name": "TopK", "config": {"k": 3, "temperature": 1.0}}})
    result = invoke(["info", "--model", cli_mdn_path])
    assert result.exit_code == 0
    assert "stop           StopHead(threshold=0.5)\nsampler        TopK(k=3, temperature=1.0)\n" \
        in result.stdout


def test_info_of_an_export_shows_its_frames(cli_mdn_tflite):
    result = invoke(["info", "--model", cli_mdn_tflite])
    assert result.exit_code == 0 and "frame_loss     mdn" in result.stdout
