"""Cost of sampling over greedy on the same model: `Stream.step` and
`LiteStream.step`, batch 1 and 256.

    python benchmarks/sampling.py [--quick]

For an `mdn` model (3 mixtures) and a `categorical` model of the bundled
model's sizes (64 units, max_steps 9, untrained weights), times
`Greedy()` without stop criteria against `TopP(0.9)` with `StopSample(0.001)` and a
stop head that never fires (all 9 inner steps run in both, so the
difference is the cost of sampling: the Philox uniforms drawn in numpy,
then the compiled step's sampling graph); for an `mse` model, no stop
against `StopSample(0.001)` (the cost of a sampled STOP). Both streams
stay open; short blocks of steps alternate between them (the order
flipped every round), so each round's pair sees the same load; prints
JSON: medians over rounds of each block's median in microseconds per
step, the median over rounds of sampled/greedy, and the number of
LiteRT operators of each export (the LiteRT step's speed follows it).
`--quick`: 6 rounds of 30 steps (default 20 of 60); `--smoke` (for
tests/test_benchmarks.py: that the script runs; its figures mean nothing):
1 round of 3 steps, on models of 8 units and max_steps 2. `--only tf|lite`: one
runtime (`--only tf` exports nothing); `--batch N` and `--frames KIND`
(repeatable): other batch sizes, fewer models. `paired` is the measurement
(`run.py` imports it).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

import scratch  # benchmarks/scratch.py: a temp folder removed at exit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import streamgen as sg  # noqa: E402
from streamgen import samplers  # noqa: E402


def make(frame_loss, units=64, max_steps=9):
    import keras

    keras.utils.set_random_seed(0)
    options = {"mixtures": 3} if frame_loss == "mdn" else {}
    # a stop head that gives logit -1.3 whatever the input
    model = sg.StreamGen(input_size=3, output_size=2, units=units, max_steps=max_steps,
                         frame_loss=frame_loss, **options)
    kernel, _ = model.stop_head.get_weights()
    model.stop_head.set_weights([kernel * 0.0, np.array([-1.3], np.float32)])
    return model


def operators(path):
    """The number of operators in a `.tflite` file, all subgraphs."""
    from streamgen.runtimes.lite import import_schema

    model = import_schema().Model.GetRootAsModel(bytearray(open(path, "rb").read()), 0)
    return sum(model.Subgraphs(i).OperatorsLength() for i in range(model.SubgraphsLength()))


def timed(stream, x, steps):
    times = []
    for row in x[:steps]:
        start = time.perf_counter()
        stream.step(row)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def settings(frame_loss):
    """The two contenders' stream options: greedy without stop criteria,
    and `TopP(0.9)` (mse: greedy) with a `StopSample` that never fires."""
    never = [sg.StopSample(0.001)]  # sigmoid(-1.3 / 0.001) = 0: never fires
    sampled = dict(stop=never) if frame_loss == "mse" else dict(
        stop=never, sampler=samplers.TopP(0.9))
    return {"greedy": dict(stop=[]), "sampled": sampled}


def paired(model, path, frame_loss, runtime, batch, rounds, steps):
    """Greedy against sampled on one model, runtime and batch size, in
    short alternating blocks.

    Args:
        model: a model from `make(frame_loss)`; `path` its `.tflite`
            export (used when `runtime` is `"lite"`).
        runtime: `"tf"` (`Stream.step`) or `"lite"` (`LiteStream.step`).
        batch: rows per step (1: one stream of 1-D inputs).
        rounds, steps: blocks per contender, steps per block.

    Returns:
        dict: `greedy_us`, `sampled_us` (medians over rounds of each
        block's median step time) and `sampled/greedy` (median over rounds
        of the pair's ratio).
    """
    rng = np.random.default_rng(0)
    shape = (steps, 3) if batch == 1 else (steps, batch, 3)
    x = rng.normal(size=shape).astype(np.float32)
    options = settings(frame_loss)
    streams = {name: (model.open_stream(seed=1, **kwargs) if runtime == "tf"
                      else sg.LiteStream(path, seed=1, **kwargs))
               for name, kwargs in options.items()}
    for stream in streams.values():
        timed(stream, x, min(steps, 20))  # warm-up
    medians = {name: [] for name in options}
    for index in range(rounds):  # short blocks, in turn: paired in time
        order = list(options) if index % 2 == 0 else list(options)[::-1]
        for name in order:
            medians[name].append(timed(streams[name], x, steps))
    greedy, sampled = np.median(medians["greedy"]), np.median(medians["sampled"])
    ratios = np.array(medians["sampled"]) / np.array(medians["greedy"])
    return {"greedy_us": round(float(greedy), 1), "sampled_us": round(float(sampled), 1),
            "sampled/greedy": round(float(np.median(ratios)), 3)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="1 round of 3 steps, small models (figures mean nothing)")
    parser.add_argument("--only", choices=("tf", "lite"))
    parser.add_argument("--batch", type=int, action="append",
                        help="a batch size (repeatable; default 1 and 256)")
    parser.add_argument("--frames", choices=("mdn", "categorical", "mse"), action="append",
                        help="a frame kind (repeatable; default all three)")
    args = parser.parse_args()
    rounds, steps = (1, 3) if args.smoke else (6, 30) if args.quick else (20, 60)
    sizes = dict(units=8, max_steps=2) if args.smoke else {}
    results = {"load_average": round(os.getloadavg()[0], 2)}
    folder = scratch.folder("streamgen-sampling-")
    for frame_loss in args.frames or ("mdn", "categorical", "mse"):
        model = make(frame_loss, **sizes)
        path = os.path.join(folder, f"{frame_loss}.tflite")
        if args.only != "tf":
            model.export_litert(path)
            results[f"{frame_loss}/litert_operators"] = operators(path)
            print(frame_loss, "operators", operators(path), file=sys.stderr)
        for batch in args.batch or (1, 256):
            for runtime in ("tf", "lite") if args.only is None else (args.only,):
                key = f"{frame_loss}/{runtime}/batch{batch}"
                results[key] = paired(model, path, frame_loss, runtime, batch, rounds, steps)
                print(key, results[key], file=sys.stderr)
    results["load_average_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
