"""What the Prometheus metrics cost `streamgen serve`: paired runs, metrics on and off.

One local Ray cluster; the bundled model's LiteRT export, 1 replica,
scenarios (a) and (b) of `serve_load.py`. Each round deploys the
application with metrics on and then off (the order alternates between
rounds), runs the same closed-loop load for --seconds, and checks every
output against the local runtime. Prints each pair and the median ratio.

    python benchmarks/serve_metrics.py [--seconds 5] [--rounds 3]
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from serve_load import check, free_port, load  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", default="ab")
    args = parser.parse_args()

    import ray
    from ray import serve

    import streamgen as sg
    from streamgen.serve.app import build_app

    lite_path = os.path.join(tempfile.mkdtemp(prefix="serve-metrics-"), "default.tflite")
    sg.load_default().export_litert(lite_path)
    reference = sg.open_runtime(lite_path)
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, logging_level="ERROR", _node_ip_address="127.0.0.1")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"ws://127.0.0.1:{port}/v1/streams"
    results = {}  # (scenario, metrics) -> [steps/s per round]
    failed = False
    try:
        for round_ in range(args.rounds):
            for metrics in ((True, False) if round_ % 2 == 0 else (False, True)):
                serve.run(build_app(lite_path, idle_timeout=None, metrics=metrics),
                          name="load", route_prefix="/")
                for scenario in args.scenarios:
                    streams, connections = {"a": (256, 4), "b": (64, 64)}[scenario]
                    asyncio.run(load(url, streams, connections, 1.0, 3))  # warm-up
                    inputs, outs, _, elapsed = asyncio.run(
                        load(url, streams, connections, args.seconds, 3, seed=1))
                    bad = check(reference, inputs, outs)
                    failed |= bad > 0
                    rate = sum(len(o) for o in outs) / elapsed
                    results.setdefault((scenario, metrics), []).append(rate)
                    print(json.dumps(dict(round=round_, scenario=scenario, metrics=metrics,
                                          steps_per_s=round(rate), mismatches=bad)),
                          flush=True)
                serve.delete("load")
    finally:
        serve.shutdown()
        ray.shutdown()
    print("\n| scenario | metrics on, steps/s | metrics off, steps/s | on/off (median of pairs) |")
    print("| --- | ---: | ---: | ---: |")
    for scenario in args.scenarios:
        on, off = results[(scenario, True)], results[(scenario, False)]
        ratio = statistics.median(a / b for a, b in zip(on, off))
        print(f"| ({scenario}) | {statistics.median(on):,.0f} | {statistics.median(off):,.0f} | "
              f"{ratio:.3f} |")
    if failed:
        print("FAILED: outputs differ from the local runtime", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
