"""Every benchmark script runs, in its quickest mode, so that none rots.

Figures are not checked here (shared machines are noisy: benchmarks/README.md
has them); only that each script ends with status 0, prints its numbers and
keeps stderr free of tracebacks. A new script in benchmarks/ must be listed
below, either with its quick arguments or as a module the others import.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"

# script -> the arguments of its quickest run
QUICK = {
    "run.py": ["--quick"],
    "lite_breakdown.py": ["--quick"],
    "decode_throughput.py": ["--steps", "2000", "--stream-steps", "30", "--no-ray"],
    "jsonl_pipeline.py": ["--small-mb", "0.2", "--big-mb", "0.4", "--train-steps", "3"],
    "serve_load.py": ["--quick", "--seconds", "1"],
    "serve_abuse.py": ["--seconds", "0.5"],
    "serve_metrics.py": ["--seconds", "0.5", "--rounds", "1", "--scenarios", "a"],
    "train_scaling.py": ["--records", "64", "--epochs", "1", "--units", "8"],
    # OLD is a copy of this checkout's package (the script refuses one checkout twice)
    "step_paired.py": ["{old}", str(ROOT), "--quick", "--pairs", "1", "--steps", "50"],
    "sampling.py": ["--quick"],
}
# modules the scripts above import or launch (not run on their own)
HELPERS = {
    "reference.py": "imported by run.py",
    "lite_latency.py": "launched by run.py and lite_breakdown.py, one process per round",
}


def test_every_script_is_listed():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")}
    assert scripts == set(QUICK) | set(HELPERS), (
        "list each benchmarks/*.py in QUICK (with its quick arguments) or HELPERS")


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(QUICK))
def test_runs_in_quick_mode(script, tmp_path):
    env = dict(os.environ, STREAMGEN_QUIET_TF="1", TF_CPP_MIN_LOG_LEVEL="3")
    old = tmp_path / "old"
    if "{old}" in QUICK[script]:
        shutil.copytree(ROOT / "streamgen", old / "streamgen",
                        ignore=shutil.ignore_patterns("__pycache__"))
    args = [str(old) if a == "{old}" else a for a in QUICK[script]]
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.strip(), "printed no numbers"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
