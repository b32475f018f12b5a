"""Abuse scenarios against `streamgen serve` (issue 19), on 127.0.0.1.

Each scenario runs for a bounded time beside a well-behaved client (one
connection, opened before the abuse, stepping one stream: 20 steps, one
per message, whose latencies are measured), probes `GET /healthz`, and
reads the replica's resident memory (from /proc) before, during, and for
up to 10 s after:

  slow_reader   connections that send and never read (each is closed with
                1013 past --max-queued-messages; the abuser reconnects at
                once, from its own address 127.0.0.2, and is refused with
                HTTP 429 during --abuse-backoff);
  flood         --max-connections + 20 connections at once (the extra ones
                are refused at once: close 1013);
  large_body    a 50 MB chunked POST /v1/lines streamed as fast as possible
                (413 past the body limit), one that declares 50 MB in
                Content-Length (413 before it is read), and a body that
                never ends (408);
  frozen        a second replica (its own app) stopped with SIGSTOP: a
                client with timeout=1 gets TimeoutError; the first replica
                is not affected.

Acceptance (issue 19): the well-behaved client's p99 < 250 ms, /healthz
within 1 s, memory growth < 200 MB and back within 10 s.

    python benchmarks/serve_abuse.py [--seconds 3] [--check] [--scenarios slow_reader,...]
    python benchmarks/serve_abuse.py --smoke

`--smoke` (for tests/test_benchmarks.py: that every scenario runs; its
figures mean nothing): 0.3 s abuses, 5 well-behaved steps each, a 0.5 s
body timeout.

Each row also gives the CPU seconds the replica and Serve's HTTP proxy
used during the scenario (`replica_cpu_s`, `proxy_cpu_s`).

The test suite's slow set runs the same scenarios (tests/test_serve_abuse.py).
"""

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import signal
import socket
import sys
import time
import urllib.request

import scratch  # benchmarks/scratch.py: a temp folder removed at exit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

STEP = "[0.1, 0.2, 0.3]"
BACK_MB = 50.0  # "returned": within this of the memory before the abuse
ABUSER = "127.0.0.2"  # the slow reader's own address (loopback): "another host"
SCENARIOS = ("slow_reader", "flood", "large_body", "frozen")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as file:
            return int(file.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _descends_from_us(pid):
    """Whether `pid` is a descendant of this process (our own Ray cluster's
    processes are: other jobs on the machine may run apps of the same name)."""
    me = os.getpid()
    for _ in range(16):
        pid = _parent(pid)
        if pid in (0, 1):
            return False
        if pid == me:
            return True
    return False


def process_pid(marker):
    """The PID of a process whose command line holds `marker` (ours first;
    of several, the one started last: a replica of an earlier app or
    cluster of the same name may still be exiting)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as file:
                command = file.read().decode("utf-8", "replace")
            with open(f"/proc/{name}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0]: the state (Z: exited, T: stopped); fields[19]: the start time
        if marker in command and fields[0] not in "ZT":
            found.append((int(fields[19]), int(name)))
    ours = [(start, pid) for start, pid in found if _descends_from_us(pid)]
    if not (ours or found):
        raise RuntimeError(f"no process {marker!r}")
    return max(ours or found)[1]


def replica_pid(app):
    """The PID of the (first) replica of a Serve application (local /proc)."""
    return process_pid(f"ServeReplica:{app}:")


def cpu_s(pid):
    """User + system CPU seconds of a process (0.0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid, field="VmRSS"):
    """A process's resident memory in MB: all of it (VmRSS), or one part of it
    (`field`, e.g. "RssShmem": shared memory it has touched, such as Ray's
    object store)."""
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def healthz_s(http):
    start = time.monotonic()
    try:
        with urllib.request.urlopen(http + "/healthz", timeout=5) as response:
            response.read()
            ok = response.status == 200
    except Exception:  # noqa: BLE001
        ok = False
    return time.monotonic() - start if ok else float("inf")


async def well_behaved(ws, steps=20, gap=0.05):
    """`steps` bare steps on an open connection; their latencies (s)."""
    latencies = []
    for _ in range(steps):
        start = time.monotonic()
        await ws.send(STEP)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        latencies.append(time.monotonic() - start)
        assert isinstance(reply, list), reply
        await asyncio.sleep(gap)
    return latencies


async def _connect(url, headers, source=None):
    from websockets.asyncio.client import connect

    extra = {"local_addr": (source, 0)} if source else {}
    return await connect(url, additional_headers=headers, max_size=None, compression=None,
                         open_timeout=10, ping_interval=None, **extra)


# ---------------------------------------------------------------------- #
# The abuses (each bounded by `seconds`).
# ---------------------------------------------------------------------- #
async def slow_reader(url, headers, seconds, source=ABUSER, grace=10.0):
    """Sends 20-step messages, never reads; reconnects at once when closed
    or refused (from the address `source`). Runs `seconds`, and on until it
    has been closed and then refused once (at most `grace` seconds more: on
    a loaded machine the proxy may pass the first messages on late)."""
    import websockets

    start = time.monotonic()
    sent = closed = refused = 0
    codes, statuses = set(), set()
    message = json.dumps([{"id": "s", "x": json.loads(STEP)}] * 20)

    def going():
        elapsed = time.monotonic() - start
        return elapsed < seconds or (elapsed < seconds + grace and not (closed and refused))

    while going():
        try:
            ws = await _connect(url, headers, source)
        except websockets.InvalidStatus as error:
            refused += 1
            statuses.add(error.response.status_code)
            continue
        try:
            while going():
                await ws.send(message)
                sent += 1
                await asyncio.sleep(0)
        except websockets.ConnectionClosed:
            closed += 1
            codes.add(ws.close_code)
        finally:
            ws.transport.abort() if ws.close_code is None else None
    return {"messages_sent": sent, "closed": closed, "close_codes": sorted(c for c in codes if c),
            "refused": refused, "refused_statuses": sorted(statuses)}


async def flood(url, headers, seconds, count):
    """Opens `count` connections at once and holds them for `seconds`."""
    import websockets

    async def one():
        start = time.monotonic()
        try:
            ws = await _connect(url, headers)
        except Exception as error:  # noqa: BLE001
            return ("failed", time.monotonic() - start, repr(error)[:80])
        try:
            await asyncio.wait_for(ws.recv(), seconds)
            return ("answered", time.monotonic() - start, None)
        except websockets.ConnectionClosed:
            return (f"closed {ws.close_code}", time.monotonic() - start, ws.close_reason)
        except asyncio.TimeoutError:
            return ("held", time.monotonic() - start, None)
        finally:
            ws.transport.abort()

    results = await asyncio.gather(*(one() for _ in range(count)))
    refused = [t for kind, t, _ in results if kind == "closed 1013"]
    return {"held": sum(kind == "held" for kind, *_ in results), "refused_1013": len(refused),
            "refusal_max_s": round(max(refused), 3) if refused else None,
            "other": sorted({kind for kind, *_ in results} - {"held", "closed 1013"})}


async def _post_raw(port, path, headers, body_chunks, pace=0.0, read_timeout=30):
    """A raw HTTP POST (streamed body); returns `(status, seconds)`."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode())

    async def send():
        try:
            for chunk in body_chunks:
                writer.write(chunk)
                await writer.drain()
                if pace:
                    await asyncio.sleep(pace)
        except (ConnectionError, OSError):
            pass

    sender = asyncio.ensure_future(send())
    try:
        line = await asyncio.wait_for(reader.readline(), read_timeout)
        status = int(line.split()[1]) if line else None
    except asyncio.TimeoutError:
        status = None
    finally:
        sender.cancel()
        writer.transport.abort()
    return status, time.monotonic() - start


def _body(size, chunked):
    """`size` bytes of NDJSON lines in 640 KiB pieces (exactly `size`: more
    than a Content-Length says would be read as a next, invalid request: 400),
    framed as HTTP chunks if `chunked`."""
    line = b"0.5 0 0.1\n" * (1 << 16)
    for start in range(0, size, len(line)):
        piece = line[:size - start]
        yield b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    if chunked:
        yield b"0\r\n\r\n"


async def large_body(port, prefix, token, seconds, size=50 << 20):
    """A 50 MB chunked body as fast as the socket takes it, one declared in
    Content-Length, and a body that never ends."""
    headers = {"Content-Type": "application/x-ndjson"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    path = prefix + "/v1/lines"
    big = asyncio.ensure_future(_post_raw(
        port, path, dict(headers, **{"Transfer-Encoding": "chunked"}), _body(size, True)))
    declared = asyncio.ensure_future(_post_raw(
        port, path, dict(headers, **{"Content-Length": str(size)}), _body(size, False)))
    never = asyncio.ensure_future(_post_raw(
        port, path, dict(headers, **{"Content-Length": "1000"}),
        (b"0.5 0 0.1\n" for _ in range(int(seconds * 10) + 40)), pace=0.5))
    (big_status, big_s), (declared_status, declared_s), (never_status, never_s) = (
        await asyncio.gather(big, declared, never))
    return {"big_status": big_status, "big_s": round(big_s, 3),
            "declared_status": declared_status, "declared_s": round(declared_s, 3),
            "never_ending_status": never_status, "never_ending_s": round(never_s, 3)}


async def frozen_client(frozen_ws_url, token, pid, seconds):
    """SIGSTOPs a replica for `seconds`; a client with timeout=1 steps it."""
    import streamgen as sg

    client = await asyncio.to_thread(sg.connect, frozen_ws_url, token, 1.0)
    stream = client.open_stream()
    x = json.loads(STEP)
    await asyncio.to_thread(stream.step, x)
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        try:
            await asyncio.to_thread(stream.step, x)
            outcome = "answered"
        except TimeoutError:
            outcome = "TimeoutError"
        waited = time.monotonic() - start
        await asyncio.sleep(max(0.0, seconds - waited))
    finally:
        os.kill(pid, signal.SIGCONT)
    await asyncio.to_thread(client.close)
    return {"frozen_call": outcome, "frozen_call_s": round(waited, 3)}


# ---------------------------------------------------------------------- #
# One scenario beside the well-behaved client.
# ---------------------------------------------------------------------- #
def _run(function, args):
    """A process's entry: runs the coroutine function `function(*args)`."""
    return asyncio.run(function(*args))


def _started():
    return os.getpid()


async def scenario(name, abuse, ws_url, http, headers, pid, proxy_pid=None, steps=20):
    """Runs `abuse` beside the well-behaved client (`steps` steps); the numbers.

    `abuse` is `(coroutine_function, args)`, run in a process of its own:
    an abuser on a thread of this one would hold the GIL that the measured
    client needs (on the machine it is another host), or a coroutine, run
    on its own event loop in a thread (the frozen replica's client: it
    imports streamgen).
    """
    loop = asyncio.get_running_loop()
    pool = None
    if isinstance(abuse, tuple):
        pool = concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"))
        await loop.run_in_executor(pool, _started)  # its start is not measured
    try:
        return await _scenario(name, abuse, pool, ws_url, http, headers, pid, proxy_pid, steps)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


async def _scenario(name, abuse, pool, ws_url, http, headers, pid, proxy_pid, steps):
    loop = asyncio.get_running_loop()
    good = await _connect(ws_url, headers)
    await well_behaved(good, steps=3, gap=0)  # warm
    before, shared_before = rss_mb(pid), rss_mb(pid, "RssShmem")
    cpu_before = cpu_s(pid), cpu_s(proxy_pid) if proxy_pid else 0.0
    peak = [before]
    health = []

    async def watch(task):
        while not task.done():
            peak[0] = max(peak[0], rss_mb(pid))
            health.append(await asyncio.to_thread(healthz_s, http))
            await asyncio.sleep(0.2)

    if pool is not None:
        task = asyncio.ensure_future(loop.run_in_executor(pool, _run, *abuse))
    else:
        task = asyncio.ensure_future(asyncio.to_thread(asyncio.run, abuse))
    await asyncio.sleep(0.3)  # the abuse is under way
    latencies, _ = await asyncio.gather(well_behaved(good, steps), watch(task))
    result = await task
    cpu = cpu_s(pid) - cpu_before[0], (cpu_s(proxy_pid) - cpu_before[1]) if proxy_pid else None
    await good.close()
    back_s, deadline = None, time.monotonic() + 10
    start = time.monotonic()
    while time.monotonic() < deadline:
        now = rss_mb(pid)
        if now <= before + BACK_MB:
            back_s = time.monotonic() - start
            break
        await asyncio.sleep(0.25)
    # Of what is still held: shared memory (Ray's object store pages mapped by
    # the replica; 12-26 MB after large_body on 2026-12-01), not the heap.
    shared_held = rss_mb(pid, "RssShmem") - shared_before
    ms = sorted(x * 1000 for x in latencies)
    return {"scenario": name, "p50_ms": round(ms[len(ms) // 2], 1),
            "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
            "max_ms": round(ms[-1], 1),
            "healthz_max_s": round(max(health), 3) if health else None,
            "rss_before_mb": round(before, 1), "rss_growth_mb": round(peak[0] - before, 1),
            "rss_back_s": None if back_s is None else round(back_s, 2),
            "rss_shared_held_mb": round(shared_held, 1),
            "replica_cpu_s": round(cpu[0], 2),
            "proxy_cpu_s": None if cpu[1] is None else round(cpu[1], 2), **result}


def ok(row):
    """Issue 19's acceptance for one scenario's numbers."""
    return (row["p99_ms"] < 250 and row["healthz_max_s"] is not None
            and row["healthz_max_s"] < 1.0 and row["rss_growth_mb"] < 200
            and row["rss_back_s"] is not None)


def run_all(port, prefix, frozen_prefix, token, seconds, max_connections, names=SCENARIOS,
            steps=20):
    """Every scenario on a running server (`steps`: the well-behaved client's);
    a list of result dicts."""
    http = f"http://127.0.0.1:{port}{prefix}"
    ws_url = f"ws://127.0.0.1:{port}{prefix}/v1/streams"
    headers = {"Authorization": f"Bearer {token}"} if token else None
    global STEP
    request = urllib.request.Request(http + "/v1/model", headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        size = json.loads(response.read())["input_size"]
    STEP = json.dumps([0.1] * size)
    pid = replica_pid(prefix.strip("/") or "streamgen")
    frozen_pid = replica_pid(frozen_prefix.strip("/"))
    proxy_pid = process_pid("ProxyActor")
    frozen_url = f"ws://127.0.0.1:{port}{frozen_prefix}"
    abuses = {
        "slow_reader": lambda: (slow_reader, (ws_url, headers, seconds)),
        "flood": lambda: (flood, (ws_url, headers, seconds, max_connections + 20)),
        "large_body": lambda: (large_body, (port, prefix, token, seconds)),
        "frozen": lambda: frozen_client(frozen_url, token, frozen_pid, seconds),
    }
    rows = []
    for name in names:
        row = asyncio.run(scenario(name, abuses[name](), ws_url, http, headers, pid, proxy_pid,
                                   steps))
        row["ok"] = ok(row)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="each abuse's duration")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a scenario misses its targets "
                             "(without it the figures are only printed: a loaded machine "
                             "misses them)")
    parser.add_argument("--abuse-backoff", type=float, default=1.0,
                        help="the app's abuse_backoff in seconds (default 1, as measured "
                             "in benchmarks/README.md; the server's own default is 0: off)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, of: " + ", ".join(SCENARIOS))
    parser.add_argument("--smoke", action="store_true",
                        help="0.3 s abuses, 5 well-behaved steps, a 0.5 s body timeout "
                             "(figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        args.seconds = 0.3
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")

    import ray
    from ray import serve

    import streamgen as sg
    from streamgen.serve.app import build_app

    import ray_start  # benchmarks/ray_start.py

    folder = scratch.folder("serve-abuse-")
    lite_path = os.path.join(folder, "default.tflite")
    sg.load_default().export_litert(lite_path)
    port = free_port()
    ray_start.init(configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    bounds = dict(max_connections=50, max_queued_messages=16, connection_timeout=30,
                  max_body_bytes=4 << 20, body_timeout=0.5 if args.smoke else 2.0)
    bounds["abuse_backoff"] = args.abuse_backoff
    try:
        serve.run(build_app(lite_path, token="t", **bounds), name="abuse",
                  route_prefix="/abuse")
        serve.run(build_app(lite_path, token="t"), name="frozen", route_prefix="/frozen")
        rows = run_all(port, "/abuse", "/frozen", "t", args.seconds, bounds["max_connections"],
                       names, steps=5 if args.smoke else 20)
    finally:
        serve.shutdown()
        ray.shutdown()
    failed = [row["scenario"] for row in rows if not row["ok"]]
    print("acceptance:", "all scenarios pass" if not failed else f"FAILED {failed}")
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
