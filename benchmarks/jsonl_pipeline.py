"""Training from JSONL files: memory vs file size, and input pipeline throughput.

1. Writes a ~10 MB and a ~1 GB JSONL file (copies of `samples/train.jsonl`)
   into a temporary folder.
2. For each, in a fresh process, trains a small model with `model.fit` on
   `sg.jsonl_dataset(path, 32, shuffle_buffer=10_000)` for `--train-steps`
   steps and reports the peak RSS (`ru_maxrss`): it must not grow with the
   file (the file is streamed, never loaded).
3. Input pipeline alone: records/s of iterating `sg.jsonl_dataset` (one file
   and four shards interleaved) vs the in-memory `sg.make_dataset` on the
   10 MB data (after `sg.load_jsonl`, whose time is reported apart).

Run:

    .venv/bin/python benchmarks/jsonl_pipeline.py [--big-mb 1000] [--train-steps 300]
    .venv/bin/python benchmarks/jsonl_pipeline.py --smoke

`--smoke` (for tests/test_benchmarks.py: that the script runs; its figures
mean nothing): one file, the first 64 records of samples/train.jsonl, and
one training process of 2 steps.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import scratch  # benchmarks/scratch.py: a temp folder removed at exit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN = """
import json, resource, sys, time
import keras
import streamgen as sg
path, steps = sys.argv[1], int(sys.argv[2])
keras.utils.set_random_seed(0)
model = sg.StreamGen(input_size=3, output_size=2, units=32, max_steps=9)
model.compile(optimizer=keras.optimizers.Adam(3e-3))
start = time.perf_counter()
ds = sg.jsonl_dataset(path, 32, shuffle_buffer=10_000, seed=0)
built = time.perf_counter() - start
history = model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start, "built_s": built,
                  "loss": history.history["loss"][-1]}))
"""


def write_copies(path, megabytes, records=None):
    """Copies of samples/train.jsonl, about `megabytes` MB (at least one copy),
    or its first `records` records: the number of records written."""
    with open(os.path.join(ROOT, "samples", "train.jsonl"), "rb") as f:
        if records is not None:
            lines = f.readlines()[:records]
            with open(path, "wb") as out:
                out.writelines(lines)
            return len(lines)
        block = f.read()
    copies = max(1, round(megabytes * 1e6 / len(block)))
    with open(path, "wb") as f:
        for _ in range(copies):
            f.write(block)
    return copies * 2000


def records_per_second(dataset, limit=None):
    count, start = 0, time.perf_counter()
    for x, _ in dataset:
        count += int(x["inputs"].shape[0])
        if limit and count >= limit:
            break
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small-mb", type=float, default=10)
    parser.add_argument("--big-mb", type=float, default=1000)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--smoke", action="store_true",
                        help="one 64-record file, one training process of 2 steps "
                             "(figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.train_steps = 2
    folder = scratch.folder("sg-jsonl-")
    files = {}
    sizes = {"small": args.small_mb, "big": args.big_mb}
    if args.smoke:  # one file, so one training process
        del sizes["big"]
    for name, size in sizes.items():
        files[name] = os.path.join(folder, f"{name}.jsonl")
        records = write_copies(files[name], size, records=64 if args.smoke else None)
        print(f"{name}: {os.path.getsize(files[name]) / 1e6:,.0f} MB, {records:,} sequences")

    for name in sizes:
        result = subprocess.run([sys.executable, "-c", TRAIN, files[name],
                                 str(args.train_steps)], capture_output=True, text=True)
        if result.returncode:
            sys.exit(result.stderr[-2000:])
        figures = json.loads(result.stdout.splitlines()[-1])
        print(f"train {args.train_steps} steps on {name}: peak RSS {figures['rss_mb']:,.0f} MB, "
              f"{figures['seconds']:.1f} s (dataset built in {figures['built_s']:.1f} s), "
              f"loss {figures['loss']:.4f}")

    import streamgen as sg

    small = files["small"]
    shards = os.path.join(folder, "shards")
    os.makedirs(shards)
    with open(small) as f:
        lines = f.readlines()
    for k in range(4):
        with open(os.path.join(shards, f"part-{k}.jsonl"), "w") as f:
            f.writelines(lines[k::4])
    start = time.perf_counter()
    inputs, targets = sg.load_jsonl(small)
    loaded = time.perf_counter() - start
    memory = sg.make_dataset(inputs, targets, 32, seed=0)
    records_per_second(memory, 2000)  # warm up (tracing)
    rates = {
        "make_dataset (in memory)": records_per_second(memory),
        "jsonl_dataset (1 file)": records_per_second(
            sg.jsonl_dataset(small, 32, shuffle_buffer=10_000, seed=0)),
        "jsonl_dataset (4 shards)": records_per_second(
            sg.jsonl_dataset(os.path.join(shards, "*.jsonl"), 32, shuffle_buffer=10_000,
                             seed=0)),
    }
    print(f"load_jsonl of the small file: {loaded:.1f} s ({len(inputs) / loaded:,.0f} records/s)")
    for name, rate in rates.items():
        print(f"{name}: {rate:,.0f} records/s")
    print(json.dumps({k: round(v) for k, v in rates.items()}))


if __name__ == "__main__":
    main()
