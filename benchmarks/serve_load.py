"""Load test of `streamgen serve`: closed-loop clients on 127.0.0.1.

One local Ray cluster; the bundled model as `.keras` (TensorFlow) and as its
LiteRT export; replicas 1 and 2. Scenarios (each bounded by --seconds):

  (a) 256 streams multiplexed over 4 connections (64 steps per message);
  (b) 64 streams, one connection each, one step per message;
  (c) (a) with batching off (--max-batch-size 1).

Every stream's inputs are recorded and its outputs checked against the
local runtime (the step `Stream`/`LiteStream` run) fed the same inputs:
same lengths, frames to 1e-5. Any mismatch fails the run (exit 1).

    python benchmarks/serve_load.py [--seconds 5] [--quick | --smoke]

`--smoke` (for tests/test_benchmarks.py: that the script runs and its
outputs check; its figures mean nothing): `--quick` with 0.3 s windows and
warm-ups.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time

import numpy as np

import scratch  # benchmarks/scratch.py: a temp folder removed at exit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url, streams, connections, seconds, input_size, seed=0):
    """Closed loop: each connection sends its streams' steps, waits, repeats."""
    from websockets.asyncio.client import connect

    rng = np.random.default_rng(seed)
    per = streams // connections
    inputs = rng.uniform(-1, 1, size=(streams, 64, input_size)).astype(np.float32)
    texts = [[[json.dumps(v) for v in inputs[s, t].tolist()] for t in range(64)]
             for s in range(streams)]
    outs = [[] for _ in range(streams)]
    latencies = []
    stop_at = time.monotonic() + seconds

    async def connection(c):
        ids = list(range(c * per, (c + 1) * per))
        async with connect(url, max_size=None, compression=None) as ws:
            while True:  # at least one round, however long the handshakes took
                parts = []
                for s in ids:
                    t = len(outs[s]) % 64
                    parts.append('{"id":"%d","x":[%s]}' % (s, ",".join(texts[s][t])))
                start = time.perf_counter()
                await ws.send("[" + ",".join(parts) + "]")
                reply = json.loads(await ws.recv())
                latencies.append(time.perf_counter() - start)
                for s, item in zip(ids, reply):
                    outs[s].append(item["out"])
                if time.monotonic() >= stop_at:
                    break

    started = time.monotonic()
    await asyncio.gather(*(connection(c) for c in range(connections)))
    elapsed = time.monotonic() - started
    return inputs, outs, latencies, elapsed


def check(runtime, inputs, outs):
    """Mismatches against the local runtime, stepped over the same inputs."""
    streams = len(outs)
    state = runtime.initial_state(streams)
    mismatches = 0
    for t in range(max(len(o) for o in outs)):
        rows = [s for s in range(streams) if len(outs[s]) > t]
        frames, lengths, new = runtime.step(inputs[rows, t % 64], state[rows])
        state[rows] = new
        for b, s in enumerate(rows):
            got = np.asarray(outs[s][t], np.float32).reshape(-1, runtime.output_size)
            want = frames[b, :lengths[b]]
            if got.shape != want.shape or not np.allclose(got, want, atol=1e-5):
                mismatches += 1
    return mismatches


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="LiteRT, 1 replica only")
    parser.add_argument("--smoke", action="store_true",
                        help="--quick with 0.3 s windows and warm-ups (figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.quick, args.seconds = True, 0.3
    warmup = args.seconds if args.smoke else 1.0

    import ray
    from ray import serve

    import streamgen as sg
    from streamgen.serve.app import build_app

    import ray_start  # benchmarks/ray_start.py

    folder = scratch.folder("serve-load-")
    keras_path = os.path.join(os.path.dirname(sg.__file__), "default_model.keras")
    lite_path = os.path.join(folder, "default.tflite")
    model = sg.load_default()
    model.export_litert(lite_path)
    engines = [("LiteRT", lite_path)] + ([] if args.quick else [("TensorFlow", keras_path)])
    # the local runtimes the outputs are checked against (of the engines run)
    references = {engine: sg.open_runtime(lite_path if engine == "LiteRT" else model)
                  for engine, _ in engines}
    port = free_port()
    ray_start.init(configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"ws://127.0.0.1:{port}/v1/streams"
    rows, failed = [], False
    try:
        for engine, path in engines:
            for replicas in ((1,) if args.quick else (1, 2)):
                for batch, scenarios in ((1024, ("a", "b")), (1, ("c",))):
                    serve.run(build_app(path, replicas=replicas, max_batch_size=batch,
                                        idle_timeout=None), name="load", route_prefix="/")
                    for scenario in scenarios:
                        streams, connections = {"a": (256, 4), "b": (64, 64),
                                                "c": (256, 4)}[scenario]
                        asyncio.run(load(url, streams, connections, warmup, 3))  # warm-up
                        inputs, outs, lat, elapsed = asyncio.run(
                            load(url, streams, connections, args.seconds, 3, seed=1))
                        steps = sum(len(o) for o in outs)
                        bad = check(references[engine], inputs, outs)
                        failed |= bad > 0
                        lat_ms = sorted(x * 1000 for x in lat)
                        row = dict(engine=engine, replicas=replicas, scenario=scenario,
                                   steps_per_s=steps / elapsed,
                                   p50_ms=statistics.median(lat_ms),
                                   p99_ms=lat_ms[int(0.99 * (len(lat_ms) - 1))],
                                   steps=steps, mismatches=bad)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                    serve.delete("load")
    finally:
        serve.shutdown()
        ray.shutdown()
    print("\n| model | replicas | scenario | steps/s | p50 ms | p99 ms | mismatches |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['engine']} | {r['replicas']} | ({r['scenario']}) | "
              f"{r['steps_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['mismatches']} |")
    for engine in {r["engine"] for r in rows}:
        for replicas in {r["replicas"] for r in rows}:
            a = [r for r in rows if (r["engine"], r["replicas"], r["scenario"])
                 == (engine, replicas, "a")]
            c = [r for r in rows if (r["engine"], r["replicas"], r["scenario"])
                 == (engine, replicas, "c")]
            if a and c:
                print(f"{engine}, {replicas} replica(s): (a)/(c) = "
                      f"{a[0]['steps_per_s'] / c[0]['steps_per_s']:.1f}x")
    if failed:
        print("FAILED: outputs differ from the local runtime", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
