"""Data-parallel training on Ray: records/s for 1 and 2 workers, all-reduce cost, quality.

On one local Ray cluster (127.0.0.1, 2 CPUs), with `streamgen.training.ray`:

1. 1 worker and 2 workers (1 CPU each, so each worker computes alike),
   per-worker batch `--batch-size`, `--epochs` epochs over the first
   `--records` records of samples/train.jsonl. Throughput is taken from the
   last epoch (the first one traces the step).
2. The all-reduce's share of a step: a 2-worker step does the same work per
   worker as a 1-worker step (same per-worker batch, one CPU each), plus
   its two collectives (the step's figures and the gradients) and the wait
   for the slower worker, so `t_step(2) - t_step(1)` is the collective cost.
3. Quality after the same records seen: the 2-worker validation loss (global
   batch 2b) against one process with `fit` and batch b, both after
   `--epochs` epochs over the same records, on samples/valid.jsonl.

Run (the quick mode is the default; bounded by the epochs and records):

    .venv/bin/python benchmarks/train_scaling.py [--records 512] [--epochs 3]
    .venv/bin/python benchmarks/train_scaling.py --smoke

`--smoke` (for tests/test_benchmarks.py: that the script runs; its figures
mean nothing): 16 records, 1 epoch, 8 units, batch 8, and the first 16
records of samples/valid.jsonl; the 2-worker run only (the 1-worker run
takes the same path without the collectives, and each Ray Train run starts
a controller and its workers: ~30 s), so no speedup is printed.
"""

import argparse
import json
import os
import sys
import time

import scratch  # benchmarks/scratch.py: a temp folder removed at exit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def head(name, folder, records):
    """The first `records` lines of samples/`name`, written to `folder`/`name`: its path."""
    path = os.path.join(folder, name)
    with open(os.path.join(ROOT, "samples", name)) as src, open(path, "w") as dst:
        for _, line in zip(range(records), src):
            dst.write(line)
    return path


def local_fit(train, valid, args):
    import keras

    import streamgen as sg

    keras.utils.set_random_seed(args.seed)
    model = sg.StreamGen(input_size=3, output_size=2, units=args.units, ir_size=32)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    ds = sg.jsonl_dataset(train, args.batch_size, shuffle_buffer=10_000, seed=args.seed)
    val = sg.jsonl_dataset(valid, args.batch_size)
    start = time.perf_counter()
    history = model.fit(ds, validation_data=val, epochs=args.epochs, verbose=0,
                        shuffle=False).history  # the dataset shuffles itself
    return {"val_loss": history["val_loss"][-1], "seconds": time.perf_counter() - start}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="16 records, 1 epoch, 8 units, batch 8, 16 validation records, "
                             "2 workers only (figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.records, args.epochs, args.units, args.batch_size = 16, 1, 8, 8

    import ray

    from streamgen.training import ray as raytrain

    import ray_start  # benchmarks/ray_start.py

    folder = scratch.folder("streamgen-scaling-")
    train = head("train.jsonl", folder, args.records)
    valid = (head("valid.jsonl", folder, 16) if args.smoke
             else os.path.join(ROOT, "samples", "valid.jsonl"))
    ray_start.init()
    results = {}
    try:
        for workers in (2,) if args.smoke else (1, 2):
            epochs = []
            start = time.perf_counter()
            result = raytrain.train_on_ray(
                train, os.path.join(folder, f"m{workers}.keras"), valid=valid,
                workers=workers, epochs=args.epochs, batch_size=args.batch_size * workers,
                learning_rate=args.learning_rate, seed=args.seed, units=args.units,
                ir_size=32, on_epoch=epochs.append)
            last = result["history"][-1]
            results[workers] = {
                "wall_s": round(time.perf_counter() - start, 1),
                "records_per_s": round(last["records"] / last["seconds"], 1),
                "step_ms": round(1000 * last["seconds"] / last["steps"], 1),
                "steps": last["steps"],
                "val_loss": round(result["history"][-1]["val_loss"], 5),
            }
            print(json.dumps({"workers": workers, **results[workers]}), flush=True)
    finally:
        ray.shutdown()
    results["fit"] = {k: round(v, 5) for k, v in local_fit(train, valid, args).items()}
    print(json.dumps({"fit_1_process": results["fit"]}), flush=True)
    two = results[2]
    ratios = {"val_loss_2_workers_vs_fit": round(two["val_loss"] / results["fit"]["val_loss"], 3)}
    if 1 in results:
        one = results[1]
        ratios = {"speedup_2_workers": round(two["records_per_s"] / one["records_per_s"], 2),
                  "collective_ms_per_step": round(two["step_ms"] - one["step_ms"], 1),
                  **ratios}
    print(json.dumps(ratios))


if __name__ == "__main__":
    sys.exit(main())
