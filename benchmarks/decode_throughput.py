"""Offline decoding throughput: `streamgen decode` (local and Ray) vs `streamgen stream`.

The validation file (`samples/valid.jsonl`, 300 sequences, 3,555 outer
steps) is repeated until it holds at least `--steps` outer steps (default
1,000,000) and decoded with the bundled model by

- `streamgen decode` (`.keras`: TensorFlow, XLA step; `.tflite`: LiteRT),
- `streamgen decode --ray --workers 2` on a local cluster (2 CPUs),
- `streamgen stream` on a prefix of the same inputs (`--stream-steps`, one
  line per outer step, a blank line between sequences): it is far too slow
  for all of them, so its rate is measured on the prefix.

Each figure is wall time of the whole command, start-up included, in outer
steps per second. Run:

    .venv/bin/python benchmarks/decode_throughput.py [--steps N] [--no-ray]
    .venv/bin/python benchmarks/decode_throughput.py --smoke [--no-ray]

`--smoke` (for tests/test_benchmarks.py: that the script runs; its figures
mean nothing): the first 20 sequences of the validation file, once, and 30
steps for `streamgen stream`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import scratch  # benchmarks/scratch.py: a temp folder removed at exit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREAMGEN = os.path.join(os.path.dirname(sys.executable), "streamgen")


def run(args, **kwargs):
    start = time.perf_counter()
    result = subprocess.run([STREAMGEN, *args], capture_output=True, text=True, timeout=900,
                            **kwargs)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {result.stderr}")
    if result.stderr:
        print(f"  (stderr not empty: {result.stderr[:200]!r})")
    return elapsed, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--stream-steps", type=int, default=3_555)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="20 sequences, 30 stream steps (figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.stream_steps = 1, 30

    folder = scratch.folder("sg-decode-")
    with open(os.path.join(ROOT, "samples", "valid.jsonl")) as f:
        lines = f.readlines()[:20 if args.smoke else None]
    per_copy = sum(len(json.loads(line)["x"]) for line in lines)
    copies = -(-args.steps // per_copy)
    data = os.path.join(folder, "data.jsonl")
    with open(data, "w") as f:
        for _ in range(copies):
            f.writelines(lines)
    steps = copies * per_copy
    print(f"input: {len(lines) * copies:,} sequences, {steps:,} outer steps, "
          f"{os.path.getsize(data) / 1e6:.0f} MB ({os.cpu_count()} CPUs)")

    tflite = os.path.join(folder, "default.tflite")
    run(["export", "-o", tflite])
    results = {}

    # streamgen stream on a prefix of the same inputs.
    prefix, count = [], 0
    for line in lines:
        if count >= args.stream_steps:
            break
        x = json.loads(line)["x"]
        prefix.extend(" ".join(map(str, v)) for v in x)
        prefix.append("")
        count += len(x)
    for name, model in (("keras", []), ("tflite", ["--model", tflite])):
        elapsed, _ = run(["stream", *model], input="\n".join(prefix) + "\n")
        results[f"stream {name}"] = count / elapsed
        print(f"streamgen stream ({name}) on {count:,} steps: {elapsed:.1f} s, "
              f"{count / elapsed:,.0f} steps/s")

    outputs = {}
    for name, model in (("keras", []), ("tflite", ["--model", tflite])):
        out = os.path.join(folder, f"out-{name}.jsonl")
        elapsed, _ = run(["decode", data, "-o", out, "--batch-size", str(args.batch_size),
                          *model])
        results[f"decode {name}"] = steps / elapsed
        outputs[name] = out
        print(f"streamgen decode ({name}): {elapsed:.1f} s, {steps / elapsed:,.0f} steps/s")

    if not args.no_ray:
        for name, model in (("keras", []), ("tflite", ["--model", tflite])):
            shards = os.path.join(folder, f"ray-{name}")
            elapsed, _ = run(["decode", "--ray", data, "-o", shards, "--workers", "2",
                              "--batch-size", str(args.batch_size), *model])
            results[f"ray {name}"] = steps / elapsed
            merged = b"".join(open(os.path.join(shards, n), "rb").read()
                              for n in sorted(os.listdir(shards)))
            with open(outputs[name], "rb") as f:
                local = f.read()
            same_lines = sum(a == b for a, b in zip(merged.splitlines(), local.splitlines()))
            print(f"streamgen decode --ray ({name}, 2 workers): {elapsed:.1f} s, "
                  f"{steps / elapsed:,.0f} steps/s; {same_lines:,} of "
                  f"{len(local.splitlines()):,} lines byte-identical to the local run")
    print(json.dumps({k: round(v) for k, v in results.items()}))


if __name__ == "__main__":
    main()
