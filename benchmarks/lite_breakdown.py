"""Where `LiteStream.step`'s time goes: the inner loop's structure and size.

    python benchmarks/lite_breakdown.py            # ~1 minute (15 rounds)
    python benchmarks/lite_breakdown.py --quick
    python benchmarks/lite_breakdown.py --smoke    # max_steps 1 unrolled and 2 `WHILE`, 1 round

Exports the benchmark's model (GRU, units 64, input 8, output 4, a stop
threshold that never fires) with `max_steps` 1, 3, 5 and 9 as written by
default (inner steps unrolled), and with `max_steps` 9 as a `WHILE` loop
(what models above `runtimes.tf.UNROLL_MAX_STEPS` get), then times each in a
fresh process without TensorFlow (`lite_latency.py`): the whole
`LiteStream.step`, and `invoke()` alone (the rest is Python: validation, the
copies in and out, splitting the frames). Interleaved by process: each round
runs one process per export, in turn. (Not several interpreters in one
process: taking turns there slows each by up to a third, cache effects that
a deployment running one model does not see.) Prints a Markdown table of
the medians over rounds; *best round* is the quietest one. `--smoke` (for
tests/test_benchmarks.py: that the script runs; its figures mean nothing)
exports one unrolled (max_steps 1) and one `WHILE` (max_steps 2) variant
and times each in one process of 20 steps.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import streamgen as sg  # noqa: E402
from streamgen.runtimes import tf as tf_runtime  # noqa: E402

INPUT_SIZE, OUTPUT_SIZE, UNITS = 8, 4, 64
NEVER = 1.0  # StopHead threshold that never fires: every inner step runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--smoke", action="store_true",
                        help="two small exports, one process each (figures mean nothing)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="streamgen-breakdown-") as folder:
        rows = measure(folder, quick=args.quick, smoke=args.smoke)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    print("| export | `LiteStream.step` median | best round | of which `invoke()` | Python |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def measure(folder, quick, smoke=False):
    """Exports the variants into `folder` and times them: table rows."""
    import keras

    paths = {}
    variants = (((1, True), (2, False)) if smoke
                else ((1, True), (3, True), (5, True), (9, True), (9, False)))
    for steps, unroll in variants:
        keras.utils.set_random_seed(0)
        model = sg.StreamGen(input_size=INPUT_SIZE, output_size=OUTPUT_SIZE, units=UNITS,
                             cell="gru", max_steps=steps, stop=[sg.StopHead(NEVER)])
        label = f"max_steps {steps}, " + ("unrolled" if unroll else "`WHILE` loop")
        paths[label] = os.path.join(folder, f"m{steps}_{'unrolled' if unroll else 'while'}.tflite")
        limit = tf_runtime.UNROLL_MAX_STEPS
        tf_runtime.UNROLL_MAX_STEPS = limit if unroll else 0
        try:
            model.export_litert(paths[label])
        finally:
            tf_runtime.UNROLL_MAX_STEPS = limit
    inputs = os.path.join(folder, "inputs.npy")
    np.save(inputs, np.random.default_rng(0).normal(size=(4096, INPUT_SIZE)).astype(np.float32))
    rounds, per_round = (1, 20) if smoke else (3, 400) if quick else (15, 2000)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lite_latency.py")
    reports = {label: [] for label in paths}
    for _ in range(rounds):
        for label, path in paths.items():
            result = subprocess.run(
                [sys.executable, script, path, inputs, "1", str(per_round)],
                capture_output=True, text=True, check=True,
            )
            report = json.loads(result.stdout)
            assert not report["tensorflow_loaded"]
            reports[label].append(report)
    rows = []
    for label, runs in reports.items():
        step = np.median([r["median"] for r in runs]) * 1e6
        best = min(r["median"] for r in runs) * 1e6
        invoke = np.median([r["invoke"] for r in runs]) * 1e6
        rows.append((label, f"{step:.1f} us", f"{best:.1f} us", f"{invoke:.1f} us",
                     f"{step - invoke:.1f} us"))
    return rows


if __name__ == "__main__":
    main()
