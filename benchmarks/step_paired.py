"""Paired latency of `Stream.step` and `LiteStream.step` at batch 1: two checkouts.

    python benchmarks/step_paired.py OLD_CHECKOUT NEW_CHECKOUT [--pairs N] [--steps N]

Each checkout exports the bundled model to its own `.tflite` (once), then
fresh processes alternate (old, new, new, old, old, new, ...: which of a
pair runs first biases it), each timing `--steps`
calls of `Stream.step` and of `LiteStream.step` on the same inputs (after
a warm-up) and printing the medians. Prints JSON: per checkout the median
over the pairs of each process's median (and 10th percentile, and CPU time
per step: steadier on a loaded machine), in microseconds, and new/old.
`--quick` runs 2 pairs of 300 steps. `--smoke` (for tests/test_benchmarks.py:
that the script runs; its figures mean nothing) runs 1 pair of 20 steps,
each process exporting its checkout's model first (2 processes, not 4).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

KEYS = ("stream", "stream_p10", "stream_cpu", "lite", "lite_p10", "lite_cpu")
_CHILD = r"""
import json, sys, time
import numpy as np
import streamgen as sg
from streamgen import default
mode, path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = default.load_default()
if mode in ("export", "export+run"):
    model.export_litert(path)
    if mode == "export":
        sys.exit(0)
x = np.random.default_rng(0).normal(size=(steps + 200, model.input_size)).astype("float32")
out = {"file": sg.__file__}
for name, stream in (("stream", model.open_stream()), ("lite", sg.LiteStream(path))):
    for row in x[:200]:
        stream.step(row)
    times = []
    cpu = time.process_time()
    for row in x[200:]:
        start = time.perf_counter()
        stream.step(row)
        times.append(time.perf_counter() - start)
    out[name] = float(np.median(times)) * 1e6
    out[name + "_p10"] = float(np.percentile(times, 10)) * 1e6
    out[name + "_cpu"] = (time.process_time() - cpu) / len(times) * 1e6
print(json.dumps(out))
"""


def _run(checkout, mode, path, steps):
    env = dict(os.environ, PYTHONPATH=checkout, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", _CHILD, mode, path, str(steps)],
                            env=env, cwd=checkout, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1]) if mode != "export" else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="1 pair of 20 steps, exports in the same processes "
                             "(figures mean nothing)")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.steps = 2, 300
    if args.smoke:
        args.pairs, args.steps = 1, 20
    folder = tempfile.mkdtemp()
    files = {}
    for label, checkout in (("old", args.old), ("new", args.new)):
        files[label] = os.path.join(folder, f"{label}.tflite")
        if not args.smoke:  # smoke: each checkout's first run exports
            _run(os.path.abspath(checkout), "export", files[label], 0)
    runs = {"old": [], "new": []}
    order = [("old", args.old), ("new", args.new)]
    for pair in range(args.pairs):  # old first, then new first: the order biases a pair
        for label, checkout in (order if pair % 2 == 0 else order[::-1]):
            mode = "run" if os.path.exists(files[label]) else "export+run"
            runs[label].append(_run(os.path.abspath(checkout), mode, files[label], args.steps))
    report = {}
    for label in runs:
        report[label] = {key: float(np.median([r[key] for r in runs[label]]))
                         for key in KEYS}
        report[label]["file"] = runs[label][0]["file"]
    if report["old"]["file"] == report["new"]["file"]:
        raise SystemExit(f"both checkouts import {report['old']['file']}")
    report["new/old"] = {key: report["new"][key] / report["old"][key] for key in KEYS}
    report["pairs"] = {key: [[round(o[key], 1), round(n[key], 1)]
                             for o, n in zip(runs["old"], runs["new"])]
                       for key in ("stream", "lite")}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
