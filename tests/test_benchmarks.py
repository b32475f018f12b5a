"""Every benchmark script runs, in its quickest mode, so that none rots.

Figures are not checked here (shared machines are noisy: benchmarks/README.md
has them); only that each script ends with status 0, prints its numbers and
keeps stderr free of tracebacks. A new script in benchmarks/ must be listed
below, either with its quick arguments or as a module the others import.

The scripts run in lanes, one per core this pytest process has (at most
LANES: they are mostly CPU-bound; under pytest-xdist the other workers take
their share of the cores), each lane taking the longest script left
(LONGEST_FIRST) when its last one ends. Four start a Ray cluster of their
own: two clusters starting together can miss Ray's 30 s raylet registration
wait, which fails the start, so those starts take turns
(benchmarks/ray_start.py, a lock file named in the scripts' environment);
once started, two clusters run side by side. The first test of the module
starts the lanes; each test waits for its script and prints its seconds
(`pytest -s` shows them). Under pytest-xdist the module runs in the Ray
tests' worker (tests/conftest.py), so no other Ray start competes.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

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
# every script of QUICK, longest first (their --smoke runs alone, 2 cores, 25-85 s
# each, ~540 s in all): the order in which the lanes take them
LONGEST_FIRST = ("serve_abuse.py", "serve_load.py", "train_scaling.py", "serve_metrics.py",
                 "decode_throughput.py", "run.py", "jsonl_pipeline.py", "step_paired.py",
                 "sampling.py", "lite_breakdown.py")
LANES = 2  # at most; see lanes()
SCRIPT_TIMEOUT_S = 600  # a script still running then is stopped (and its test fails)
# modules the scripts above import or launch (not run on their own)
HELPERS = {
    "reference.py": "imported by run.py",
    "lite_latency.py": "launched by run.py and lite_breakdown.py, one process per round",
    "ray_start.py": "imported by the scripts that start a Ray cluster",
    "scratch.py": "imported by the scripts that write files: their temp folder",
}


def test_every_script_is_listed():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")}
    assert scripts == set(QUICK) | set(HELPERS), (
        "list each benchmarks/*.py in QUICK (with its quick arguments) or HELPERS")
    assert sorted(LONGEST_FIRST) == sorted(QUICK), "list each script of QUICK in LONGEST_FIRST"


def lanes():
    """Scripts run at once: this process's share of the cores (pytest-xdist
    sets PYTEST_XDIST_WORKER_COUNT in its workers), 1 to LANES."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(LANES, (os.cpu_count() or 1) // workers))


def run_script(script, folder, ray_lock=None):
    """Runs `script` with its quick arguments in `folder` -> CompletedProcess.
    `ray_lock`: the file its Ray cluster's start holds (benchmarks/ray_start.py)."""
    env = dict(os.environ, STREAMGEN_QUIET_TF="1", TF_CPP_MIN_LOG_LEVEL="3")
    if ray_lock is not None:
        env["STREAMGEN_BENCH_RAY_LOCK"] = str(ray_lock)
    old = folder / "old"
    if "{old}" in QUICK[script]:
        shutil.copytree(ROOT / "streamgen", old / "streamgen",
                        ignore=shutil.ignore_patterns("__pycache__"))
    args = [str(old) if a == "{old}" else a for a in QUICK[script]]
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], cwd=folder, env=env,
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def quick_runs(request, tmp_path_factory):
    """({script: (CompletedProcess or the exception, seconds)}, {script: Event set
    when it ended}): the selected scripts, lanes() at a time, longest first; at
    the module's end, all finished."""
    selected = {item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_runs_in_quick_mode"}
    results, ended = {}, {script: threading.Event() for script in selected}
    pending = [script for script in LONGEST_FIRST if script in selected]
    taking = threading.Lock()
    ray_lock = tmp_path_factory.mktemp("ray_start") / "lock"

    def run_lane():
        while True:
            with taking:
                if not pending:
                    return
                script = pending.pop(0)
            start = time.monotonic()
            try:
                result = run_script(
                    script, tmp_path_factory.mktemp(script.replace(".", "_")), ray_lock)
            except Exception as error:  # noqa: BLE001  (raised by the script's own test)
                result = error
            results[script] = (result, time.monotonic() - start)
            ended[script].set()

    threads = [threading.Thread(target=run_lane, daemon=True) for _ in range(lanes())]
    for thread in threads:
        thread.start()
    yield results, ended
    for thread in threads:  # leave nothing running
        thread.join()


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(QUICK))
def test_runs_in_quick_mode(script, quick_runs):
    results, ended = quick_runs
    # Each script is stopped after SCRIPT_TIMEOUT_S (run_script), so each ends;
    # this only bounds the wait for those ahead of it in its lane.
    limit = SCRIPT_TIMEOUT_S * len(QUICK)
    assert ended[script].wait(timeout=limit), f"{script} did not end within {limit} s"
    result, seconds = results[script]
    print(f"{script}: {seconds:.1f} s")
    if isinstance(result, Exception):
        raise result
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.strip(), "printed no numbers"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
