"""What the Prometheus metrics cost `streamgen serve`: paired runs, metrics on and off.

One local Ray cluster; the bundled model's LiteRT export, 1 replica,
scenarios (a) and (b) of `serve_load.py`. Two applications run side by
side, one with the metrics on (`/metrics-on`), one with them off
(`/metrics-off`); each is scraped once at the start (so that the
MetricsHub actor's start, a one-time cost, is over) and warmed up for 1 s
per scenario. Each round then runs the same closed-loop load for --seconds
on one and then the other (the order alternates between rounds: a pair is
seconds apart, so the drift of a shared machine mostly cancels), and
checks every output against the local runtime. Prints each pair and the
median ratio.

Beside throughput (which on a shared machine moves with the other jobs),
it reads the CPU time of every process of the cluster from /proc (Linux)
over each measured window and prints CPU microseconds per step: the
replica's, the proxy's, the load generator's (this process) and the rest
of Ray's. That is the work the metrics add, whatever else runs on the machine.

With --together it then also loads both applications at once (half the
streams and connections each, --rounds times): the two replicas share the
same moment of the machine, so their CPU a step compares directly.

    python benchmarks/serve_metrics.py [--seconds 5] [--rounds 3] [--scenarios ab] [--together]
    python benchmarks/serve_metrics.py --smoke

`--smoke` (for tests/test_benchmarks.py: that the script runs and its
outputs check; its figures mean nothing): scenario (a), one round, 0.3 s
windows and warm-ups, and --together.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import urllib.request

import scratch  # benchmarks/scratch.py: a temp folder removed at exit

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from serve_load import check, free_port, load  # noqa: E402

GROUPS = ("replica", "proxy", "client", "ray")


def _group(pid, cmdline, app):
    """The part of the benchmark a process of the cluster is (`app`: the
    application under load; the other one's replica counts as Ray's)."""
    if pid == os.getpid():
        return "client"
    if f"ServeReplica:{app}:" in cmdline:
        return "replica"
    if "ProxyActor" in cmdline:
        return "proxy"
    return "ray"


def cpu_seconds(app):
    """{pid: (group, user + system CPU seconds)} of this process and its
    descendants (Ray's processes), from /proc; {} where there is none."""
    if not os.path.isdir("/proc"):
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    parent, found = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as file:
                stat = file.read()
            with open(f"/proc/{name}/cmdline", "rb") as file:
                cmdline = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(name)
        parent[pid] = int(fields[1])
        found[pid] = (cmdline, (int(fields[11]) + int(fields[12])) / tick)
    mine, root = {}, os.getpid()
    for pid, (cmdline, seconds) in found.items():
        up = pid
        while up not in (0, root) and up in parent:
            up = parent[up]
        if up == root:
            mine[pid] = (_group(pid, cmdline, app), seconds)
    return mine


def cpu_per_step(before, after, steps):
    """CPU microseconds per step of each group, between two `cpu_seconds()`."""
    used = dict.fromkeys(GROUPS, 0.0)
    for pid, (group, seconds) in after.items():
        used[group] += seconds - before.get(pid, (group, 0.0))[1]
    return {group: used[group] / max(steps, 1) * 1e6 for group in GROUPS}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", default="ab")
    parser.add_argument("--together", action="store_true",
                        help="also load both applications at once (half the streams "
                             "each) and compare their replicas' CPU a step")
    parser.add_argument("--smoke", action="store_true",
                        help="scenario (a), 1 round, 0.3 s windows and warm-ups, --together "
                             "(figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds, args.scenarios, args.together = 0.3, 1, "a", True
    warmup = args.seconds if args.smoke else 1.0

    import ray
    from ray import serve

    import streamgen as sg
    from streamgen.serve.app import build_app

    import ray_start  # benchmarks/ray_start.py

    lite_path = os.path.join(scratch.folder("serve-metrics-"), "default.tflite")
    sg.load_default().export_litert(lite_path)
    reference = sg.open_runtime(lite_path)
    port = free_port()
    ray_start.init(configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    apps = {True: "metrics-on", False: "metrics-off"}  # deployed in this order
    results = {}  # (scenario, metrics) -> [steps/s per round]
    cpu = {}  # (scenario, metrics) -> [{group: CPU us per step} per round]
    together = {}  # (scenario, metrics) -> [(steps/s, replica CPU us per step)]
    failed = False
    try:
        for metrics, app in apps.items():
            serve.run(build_app(lite_path, idle_timeout=None, metrics=metrics),
                      name=app, route_prefix=f"/{app}")
            # One scrape first: it waits for the application's MetricsHub (one
            # process, started with the replica: a one-time cost, not throughput).
            urllib.request.urlopen(f"http://127.0.0.1:{port}/{app}/metrics", timeout=30).read()
        for scenario in args.scenarios:
            streams, connections = {"a": (256, 4), "b": (64, 64)}[scenario]
            for app in apps.values():  # warm-up
                asyncio.run(load(f"ws://127.0.0.1:{port}/{app}/v1/streams", streams,
                                 connections, warmup, 3))
            for round_ in range(args.rounds):
                for metrics in ((True, False) if round_ % 2 == 0 else (False, True)):
                    url = f"ws://127.0.0.1:{port}/{apps[metrics]}/v1/streams"
                    before = cpu_seconds(apps[metrics])
                    inputs, outs, _, elapsed = asyncio.run(
                        load(url, streams, connections, args.seconds, 3, seed=1))
                    steps = sum(len(o) for o in outs)
                    used = cpu_per_step(before, cpu_seconds(apps[metrics]), steps)
                    bad = check(reference, inputs, outs)
                    failed |= bad > 0
                    rate = steps / elapsed
                    results.setdefault((scenario, metrics), []).append(rate)
                    cpu.setdefault((scenario, metrics), []).append(used)
                    print(json.dumps(dict(
                        round=round_, scenario=scenario, metrics=metrics,
                        steps_per_s=round(rate), mismatches=bad,
                        cpu_us_per_step={g: round(v, 1) for g, v in used.items()})),
                        flush=True)
        for scenario in args.scenarios if args.together else ():
            streams, connections = {"a": (256, 4), "b": (64, 64)}[scenario]
            for round_ in range(args.rounds):
                before = {m: cpu_seconds(app) for m, app in apps.items()}

                async def both():
                    return await asyncio.gather(*(
                        load(f"ws://127.0.0.1:{port}/{app}/v1/streams", streams // 2,
                             connections // 2, args.seconds, 3, seed=1)
                        for app in apps.values()))

                runs = dict(zip(apps, asyncio.run(both())))
                row = {}
                for metrics, (inputs, outs, _, elapsed) in runs.items():
                    steps = sum(len(o) for o in outs)
                    bad = check(reference, inputs, outs)
                    failed |= bad > 0
                    used = cpu_per_step(before[metrics], cpu_seconds(apps[metrics]), steps)
                    row[metrics] = (steps / elapsed, used["replica"])
                    together.setdefault((scenario, metrics), []).append(row[metrics])
                print(json.dumps(dict(
                    together=round_, scenario=scenario,
                    steps_per_s_on_off=[round(row[m][0]) for m in (True, False)],
                    replica_cpu_us_per_step_on_off=[round(row[m][1], 1)
                                                    for m in (True, False)])), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    print("\n| scenario | metrics on, steps/s | metrics off, steps/s | on/off (median of pairs) |"
          " replica CPU us/step on / off | all CPU us/step on / off |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for scenario in args.scenarios:
        on, off = results[(scenario, True)], results[(scenario, False)]
        ratio = statistics.median(a / b for a, b in zip(on, off))
        replica = [statistics.median(c["replica"] for c in cpu[(scenario, m)])
                   for m in (True, False)]
        total = [statistics.median(sum(c.values()) for c in cpu[(scenario, m)])
                 for m in (True, False)]
        print(f"| ({scenario}) | {statistics.median(on):,.0f} | {statistics.median(off):,.0f} | "
              f"{ratio:.3f} | {replica[0]:.0f} / {replica[1]:.0f} | "
              f"{total[0]:.0f} / {total[1]:.0f} |")
    if together:
        print("\nBoth at once (half the streams each): median of the rounds' on/off ratios")
        print("| scenario | steps/s on/off | replica CPU us/step on/off |")
        print("| --- | ---: | ---: |")
        for scenario in args.scenarios:
            pairs = list(zip(together[(scenario, True)], together[(scenario, False)]))
            print(f"| ({scenario}) | {statistics.median(a[0] / b[0] for a, b in pairs):.3f} | "
                  f"{statistics.median(a[1] / b[1] for a, b in pairs):.3f} |")
    if failed:
        print("FAILED: outputs differ from the local runtime", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
