"""Each command opens its model once: one load (or one read and check of a
`.tflite` file) and one trace, whatever `--stop`, `--threshold`,
`--max-steps` and the sampling options ask for (they resolve against the
opened model and are applied with `runtime.with_options`, which shares what
was opened)."""

import json

import pytest
from click.testing import CliRunner

import streamgen as sg
from streamgen.cli.main import cli
from streamgen.runtimes import lite
from streamgen.runtimes.tf import compiled_functions

OPTIONS = ["--stop", "l2-above", "--threshold", "2.5", "--max-steps", "5"]
# On the mdn model: a sampler, a seed and the sampled STOP (plot: and samples).
SAMPLING = ["--sampler", "top-k", "--top-k", "2", "--temperature", "0.8", "--seed", "3",
            "--stop", "sample", "--threshold", "0.7", "--max-steps", "5"]
LINES = "0.5 0 0.1\n1 1 -0.5\n\n0.2 0.1 0.9\n"

pytestmark = pytest.mark.fresh_models  # counts loads and traces (tests/conftest.py)


@pytest.fixture
def opens(monkeypatch):
    """Counts `.keras` loads (keeping the models) and `.tflite` reads and checks."""
    counts = {"keras": [], "tflite": 0}
    load, read = sg.load_model, lite.read_checked_metadata

    def counted_load(path):
        model = load(path)
        counts["keras"].append(model)
        return model

    def counted_read(content, path):
        counts["tflite"] += 1
        return read(content, path)

    monkeypatch.setattr(sg, "load_model", counted_load)
    monkeypatch.setattr(lite, "read_checked_metadata", counted_read)
    return counts


def commands(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"x": [[0.5, 0, 0.1], [1, 1, -0.5]], "y": [[[1, 2]], []]}) + "\n")
    return {
        "stream": (["stream"], LINES),
        "plot": (["plot", "-o", str(tmp_path / "p.png"), str(tmp_path / "in.txt")], None),
        "decode": (["decode", str(data), "-o", str(tmp_path / "out.jsonl")], None),
        "evaluate": (["evaluate", str(data)], None),
    }


# Sampling on a .keras model traces the sampling step, XLA's for decode
# (~3.5 s each): in the full run.
CASES = [pytest.param(name, kind, sampling,
                      id=f"{'sampling' if sampling else 'stop'}-{kind}-{name}",
                      marks=pytest.mark.slow if sampling and kind == "keras" else ())
         for sampling in (False, True) for kind in ("keras", "tflite")
         for name in ("stream", "plot", "decode", "evaluate")]


@pytest.mark.parametrize("name, kind, sampling", CASES)
def test_a_command_opens_its_model_once(name, kind, sampling, opens, tmp_path, cli_model_path,
                                        cli_tflite, cli_mdn_path, cli_mdn_tflite):
    (tmp_path / "in.txt").write_text(LINES)
    args, stdin = commands(tmp_path)[name]
    if sampling:
        path = cli_mdn_path if kind == "keras" else cli_mdn_tflite
        options = SAMPLING[:-2] if name == "evaluate" else SAMPLING  # (no --max-steps)
        options = [*options, *(["--samples", "2"] if name in ("plot", "evaluate") else [])]
    else:
        path = cli_model_path if kind == "keras" else cli_tflite
        options = OPTIONS[:-2] if name == "evaluate" else OPTIONS
    result = CliRunner().invoke(cli, [*args, "--model", path, *options], input=stdin,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    if kind == "keras":
        assert opens["tflite"] == 0 and len(opens["keras"]) == 1
        model = opens["keras"][0]
        functions = compiled_functions(model)
        if sampling or name == "evaluate":
            # No retrace: each compiled function (the greedy and the
            # sampling step; evaluate's free-running and forced decodes)
            # traced once, whatever the options.
            counts = [f.experimental_get_tracing_count() for f in functions._functions.values()]
            assert counts and set(counts) == {1}, counts
        else:
            # One trace: the model's StopHead and the asked L2Norm share the
            # step (decode's: the XLA step).
            assert functions.tracing_count() == 1
    else:
        assert opens["keras"] == [] and opens["tflite"] == 1


def test_serve_describes_its_model_from_one_open(opens, cli_model_path):
    from streamgen.cli import commands_serve

    info = commands_serve._model_info(cli_model_path)
    assert len(opens["keras"]) == 1 and info["runtime"] == "TFRuntime"
    assert info["stop"] == [{"class_name": "StopHead", "config": {"threshold": 0.5}}]


@pytest.mark.parametrize("kind", ["keras", "tflite"])
def test_decode_ray_resolves_the_options_without_opening_the_model(
        kind, opens, monkeypatch, tmp_path, cli_mdn_path, cli_mdn_tflite):
    """`decode --ray`: the actors open the model; the driver only reads the
    file's facts (a `.keras` config, a `.tflite` file's metadata) to check
    the options and hand the resolved criteria on."""
    from streamgen.offline import ray as raydata

    calls = []

    def fake_decode_ray(path, files, out_dir, **options):
        calls.append((path, options))
        return {"sequences": 1, "steps": 2, "skipped": 0, "shards": []}

    monkeypatch.setattr(raydata, "decode_ray", fake_decode_ray)
    path = cli_mdn_path if kind == "keras" else cli_mdn_tflite
    data = commands(tmp_path)["decode"][0][1]
    result = CliRunner().invoke(
        cli, ["decode", "--ray", data, "--model", path, "-o", str(tmp_path / "out"), *SAMPLING],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert opens["keras"] == [] and opens["tflite"] == (1 if kind == "tflite" else 0)
    ((got_path, options),) = calls
    assert got_path == path and options["max_steps"] == 5 and options["seed"] == 3
    assert options["stop"] == [{"class_name": "StopSample", "config": {"temperature": 0.7}}]
    assert options["sampler"]["class_name"] == "TopK"
    # A bad option is still refused before any worker starts.
    bad = CliRunner().invoke(
        cli, ["decode", "--ray", data, "--model", path, "-o", str(tmp_path / "out2"),
              "--max-steps", "99"])
    assert bad.exit_code == 2 and "above the model's trained cap" in bad.output
    assert len(calls) == 1
