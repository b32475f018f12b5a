"""Every benchmark script runs, in its quickest mode, so that none rots.

Figures are not checked here (shared machines are noisy: benchmarks/README.md
has them); only that each script ends with status 0, prints its numbers and
keeps stderr free of tracebacks. A new script in benchmarks/ must be listed
below, either with its quick arguments or as a module the others import.

The scripts run in two lanes at once, each lane one script after the other:
the ones that start a Ray cluster of their own (at most one such start at a
time: a raylet that misses Ray's 30 s registration wait fails the start),
and the rest. The first test of the module starts both lanes; each test
waits for its script. About half the wall time of one lane, on 2 cores,
since the Ray scripts mostly wait for their cluster.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

# script -> the arguments of its quickest run (`--smoke`: every section, scenario and
# check once, at the smallest sizes; its figures mean nothing)
QUICK = {
    "run.py": ["--smoke"],
    "lite_breakdown.py": ["--smoke"],
    "decode_throughput.py": ["--smoke", "--no-ray"],
    "jsonl_pipeline.py": ["--smoke"],
    "serve_load.py": ["--smoke"],
    "serve_abuse.py": ["--smoke"],
    "serve_metrics.py": ["--smoke"],
    "train_scaling.py": ["--smoke"],
    # OLD is a copy of this checkout's package (the script refuses one checkout twice)
    "step_paired.py": ["{old}", str(ROOT), "--smoke"],
    "sampling.py": ["--smoke", "--batch", "1"],
}
# the scripts that start a Ray cluster of their own, longest first
RAY_LANE = ("train_scaling.py", "serve_load.py", "serve_abuse.py", "serve_metrics.py")
# modules the scripts above import or launch (not run on their own)
HELPERS = {
    "reference.py": "imported by run.py",
    "lite_latency.py": "launched by run.py and lite_breakdown.py, one process per round",
}


def test_every_script_is_listed():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")}
    assert scripts == set(QUICK) | set(HELPERS), (
        "list each benchmarks/*.py in QUICK (with its quick arguments) or HELPERS")


def run_script(script, folder):
    """Runs `script` with its quick arguments in `folder` -> CompletedProcess."""
    env = dict(os.environ, STREAMGEN_QUIET_TF="1", TF_CPP_MIN_LOG_LEVEL="3")
    old = folder / "old"
    if "{old}" in QUICK[script]:
        shutil.copytree(ROOT / "streamgen", old / "streamgen",
                        ignore=shutil.ignore_patterns("__pycache__"))
    args = [str(old) if a == "{old}" else a for a in QUICK[script]]
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], cwd=folder, env=env,
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def quick_runs(request, tmp_path_factory):
    """({script: CompletedProcess or the exception}, {script: Event set when it ended}):
    both lanes of the selected scripts started at once; at the module's end,
    both finished."""
    selected = {item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_runs_in_quick_mode"}
    results, ended = {}, {script: threading.Event() for script in selected}

    def run_lane(lane):
        for script in lane:
            try:
                results[script] = run_script(
                    script, tmp_path_factory.mktemp(script.replace(".", "_")))
            except Exception as error:  # noqa: BLE001  (raised by the script's own test)
                results[script] = error
            ended[script].set()

    others = sorted(selected - set(RAY_LANE), key=lambda s: s != "run.py")  # longest first
    lanes = [threading.Thread(target=run_lane, args=(lane,), daemon=True)
             for lane in ([s for s in RAY_LANE if s in selected], others)]
    for lane in lanes:
        lane.start()
    yield results, ended
    for lane in lanes:  # leave nothing running
        lane.join()


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(QUICK))
def test_runs_in_quick_mode(script, quick_runs):
    results, ended = quick_runs
    assert ended[script].wait(timeout=1200), f"{script} did not end within 20 minutes"
    result = results[script]
    if isinstance(result, Exception):
        raise result
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.strip(), "printed no numbers"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
