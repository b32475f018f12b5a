"""Prometheus metrics of `streamgen serve`: one registry per replica, one scrape for all.

Each replica counts into its own `prometheus_client` registry, every series
labelled `replica="<id>"`:

| metric | type | what |
| --- | --- | --- |
| `streamgen_open_streams` | gauge | streams (table rows) open |
| `streamgen_connections` | gauge | WebSocket connections open |
| `streamgen_outer_steps_total` | counter | outer steps run (stream inputs stepped) |
| `streamgen_inner_steps_total` | counter | inner steps emitted (frames of the `Out[i]`s) |
| `streamgen_messages_total` | counter | WebSocket messages answered |
| `streamgen_errors_total{kind}` | counter | refusals and error replies, by kind (`KINDS`) |
| `streamgen_idle_drops_total` | counter | streams dropped by `--idle-timeout` |
| `streamgen_tick_rows` | histogram | rows of one tick (calls of `--max-batch-size` rows) |
| `streamgen_tick_seconds` | histogram | the batched step of one tick |
| `streamgen_message_seconds` | histogram | a message, from receipt to reply sent |

The same values go to Ray's own export (`ray.serve.metrics`, names as
above, a histogram as its `_bucket`/`_count`/`_sum` series; Serve adds its
deployment, replica and application tags) for clusters already scraped
through Ray.

`GET /metrics` answers for the whole deployment: every replica pushes its
registry's text (`REPORT_EVERY_S`) to one `MetricsHub` actor per
application; the replica that takes the scrape merges its own fresh text
with the others' (`merge`, through `prometheus_client`'s parser), so one
HELP/TYPE per family and a series per replica.

What a message or a tick costs: plain Python numbers. The hot path (per
message, per tick) only adds to ints and floats of this object (a
histogram observation is one `bisect` and two additions); nothing there
takes a lock or calls into Ray. A call into `ray.serve.metrics` crosses
into Ray's core worker and, on a busy replica, was measured at 30 us to
1.5 ms of wall time each (against ~10 us idle); recorded per message and
per tick (six calls), they held the event loop ~1.9 ms a message
(benchmarks/README.md, "What the metrics cost"). So:

- `prometheus_client` reads the numbers when it is scraped (`text()`):
  the registry holds one collector (`_Collector`) that yields the
  families (`CounterMetricFamily`, `HistogramMetricFamily`, ...) from
  them, so the text is `prometheus_client`'s own, always current.
- Ray's export is pushed once per `REPORT_EVERY_S` (`push_ray`, from the
  report task, in a thread of its own so the event loop never waits on
  it), from what changed since the last push: counters `inc(delta)` (only
  when the delta is not 0), gauges `set(value)`. A histogram goes to Ray
  as the series a Prometheus histogram is made of: Ray gauges
  `<name>_bucket{le}`, `<name>_count` and `<name>_sum` set to this
  replica's cumulative values (only the changed ones), so Ray's endpoint
  shows `ray_<name>_bucket{le=...}`, `_count`, `_sum`: the names and
  values a Ray histogram would have, and `histogram_quantile` over them
  works the same; only their `# TYPE` says gauge. Why not a Ray
  `Histogram`: it takes one `observe(value)` per observation, so a batched
  push would replay every message and tick (one Ray call each, 30-40 us
  under load: an estimated 3-5% of the replica at one step per message); the gauges
  cost at most 3 x 15 calls a second, whatever the load.

Each number has one writer thread (the tick's duration is counted in the
step thread, all else on the event loop); readers copy, so a scrape never
tears a histogram (its count is the sum of its buckets' as copied).
"""

import asyncio
import bisect
import concurrent.futures
import itertools
import math
import time

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

# What `generate_latest` writes (prometheus_client's default for a scrape
# that asks for nothing else; its CONTENT_TYPE_LATEST says 1.0.0 since 0.22).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KINDS = ("bad_request", "auth", "origin", "limit", "oversize", "expired", "internal")
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
SECOND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REPORT_EVERY_S = 1.0
STALE_AFTER_S = 30.0  # a replica silent this long (gone) leaves the scrape
HUB_NAMESPACE = "streamgen"

prometheus_client.disable_created_metrics()  # no `_created` series (this process is a replica)

# name: (type, help, extra labels, buckets)
SPECS = {
    "open_streams": ("gauge", "Streams (state table rows) open on the replica.", (), None),
    "connections": ("gauge", "WebSocket connections open on the replica.", (), None),
    "outer_steps": ("counter", "Outer steps run (stream inputs stepped).", (), None),
    "inner_steps": ("counter", "Inner steps emitted (frames of the Out[i] sent).", (), None),
    "messages": ("counter", "WebSocket messages answered.", (), None),
    "errors": ("counter", "Refused requests and error replies, by kind.", ("kind",), None),
    "idle_drops": ("counter", "Streams dropped after --idle-timeout without a request.", (),
                   None),
    "tick_rows": ("histogram", "Rows (stream steps) of one batched tick.", (), ROW_BUCKETS),
    "tick_seconds": ("histogram", "Duration of one tick's batched step, seconds.", (),
                     SECOND_BUCKETS),
    "message_seconds": ("histogram", "A WebSocket message from receipt to reply sent, seconds.",
                        (), SECOND_BUCKETS),
}


class Observations:
    """A histogram's observations as plain numbers (one writer thread).

    Args:
        bounds: the buckets' upper bounds, increasing (a last `+Inf` bucket
            is implied).

    `counts[i]` is the number of values in bucket `i`,
    `(bounds[i - 1], bounds[i]]` (Prometheus' `le`); `total` is the sum of
    all values, added in order.

    Example:

    >>> seen = Observations((1, 2, 4))
    >>> seen.observe(3); seen.observe(0.5); seen.observe(9)
    >>> seen.counts, seen.total
    ([1, 0, 1, 1], 12.5)
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds):
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


def error_kind(message):
    """The `kind` label of an error reply item's text."""
    if "(--max-streams)" in message:
        return "limit"
    if "(--idle-timeout)" in message:
        return "expired"
    if message.startswith("internal error"):
        return "internal"
    return "bad_request"


class ReplicaMetrics:
    """The metrics of one replica.

    Args:
        replica: the replica's id (the `replica` label).
        open_streams: callable -> the number of open streams (read at scrape).
        connections: callable -> the number of open connections.
        ray_export: also export through `ray.serve.metrics` (true: only
            inside a Serve replica), pushed by `report` (`push_ray`); or an
            object with the attributes of `_RayExport` (tests).
        hub: the name of the application's `MetricsHub` (`hub_name`): made
            now, so that its process starts with the replica, not under
            the first traffic; `None`: on the first `report`.

    Example:

    >>> metrics = ReplicaMetrics("r1", open_streams=lambda: 3, connections=lambda: 1)
    >>> metrics.error("auth")
    >>> b'streamgen_errors_total{kind="auth",replica="r1"} 1.0' in metrics.text()
    True
    """

    def __init__(self, replica, open_streams=lambda: 0, connections=lambda: 0,
                 ray_export=False, hub=None):
        self.replica = str(replica)
        self._open_streams, self._connections = open_streams, connections
        self.outer_steps = self.inner_steps = self.messages = self.idle_drops = 0
        self.errors = dict.fromkeys(KINDS, 0)
        self.tick_rows = Observations(ROW_BUCKETS)
        self.tick_seconds = Observations(SECOND_BUCKETS)
        self.message_seconds = Observations(SECOND_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        if ray_export is True:
            ray_export = _RayExport()
        self.ray = ray_export or None
        self._pushed = {}  # what `push_ray` last saw: counter name or ("errors", kind) ->
        # number; histogram name -> cumulative counts
        self._pusher = None  # the thread of `push_ray`
        self._hub = None
        if hub is not None:
            try:
                self._connect(hub)
            except Exception:  # noqa: BLE001  (tried again at each report)
                self._hub = None

    # ------------------------------------------------------------------ #
    # Recording (the hot path: plain numbers only).
    # ------------------------------------------------------------------ #
    def instrument(self, batcher):
        """Counts every tick of `batcher` (a `batcher.Batcher`): wraps its
        `step` (timed; run in the step thread) and `scatter` (rows, frames)."""
        step, scatter = batcher.step, batcher.scatter
        perf_counter, tick_seconds = time.perf_counter, self.tick_seconds

        def timed_step(rows, *arguments):
            start = perf_counter()
            try:
                return step(rows, *arguments)
            finally:
                tick_seconds.observe(perf_counter() - start)

        def counted_scatter(rows, result):
            outs = scatter(rows, result)
            self.tick(len(rows), int(result[1].sum()))
            return outs

        batcher.step, batcher.scatter = timed_step, counted_scatter
        return batcher

    def tick(self, rows, frames):
        """One tick stepped `rows` streams and emitted `frames` inner steps."""
        self.tick_rows.observe(rows)
        self.outer_steps += rows
        self.inner_steps += frames

    def message(self, seconds, items=()):
        """A WebSocket message answered `seconds` after receipt; its reply
        `items` (`(kind, id, value)`, see `session.Session.handle`) are
        scanned for errors."""
        self.messages += 1
        self.message_seconds.observe(seconds)
        for kind, _, value in items:
            if kind == "error":
                self.error(error_kind(value))

    def error(self, kind, count=1):
        """`count` errors of `kind` (one of `KINDS`)."""
        self.errors[kind] += count

    def dropped_idle(self, count):
        """`count` streams dropped by `--idle-timeout`."""
        self.idle_drops += count

    # ------------------------------------------------------------------ #
    # Reading.
    # ------------------------------------------------------------------ #
    def text(self):
        """This replica's metrics in the Prometheus text format (bytes)."""
        return generate_latest(self.registry)

    def push_ray(self):
        """Records what changed since the last push into Ray's export (see
        the module's docstring); returns the number of Ray calls made."""
        ray, pushed, calls = self.ray, self._pushed, 0
        if ray is None:
            return 0
        counters = [(name, getattr(self, name), getattr(ray, name), {})
                    for name in ("outer_steps", "inner_steps", "messages", "idle_drops")]
        counters += [(("errors", kind), value, ray.errors, {"tags": {"kind": kind}})
                     for kind, value in list(self.errors.items())]
        for key, value, exported, tags in counters:  # only the deltas, none of 0
            if value > pushed.get(key, 0):
                exported.inc(value - pushed.get(key, 0), **tags)
                calls += 1
            pushed[key] = value
        ray.open_streams.set(self._open_streams())
        ray.connections.set(self._connections())
        calls += 2
        for name in ("tick_rows", "tick_seconds", "message_seconds"):
            seen = getattr(self, name)
            cumulative = list(itertools.accumulate(seen.counts))
            old = pushed.get(name)
            if cumulative == old:
                continue
            exported = getattr(ray, name)
            for le, value, before in zip(_les(seen.bounds), cumulative,
                                         old or [None] * len(cumulative)):
                if value != before:
                    exported.bucket.set(value, tags={"le": le})
                    calls += 1
            exported.count.set(cumulative[-1])
            exported.sum.set(seen.total)
            calls += 2
            pushed[name] = cumulative
        return calls

    def _connect(self, hub_name):
        if self._hub is None:
            self._hub = MetricsHub.options(
                name=hub_name, namespace=HUB_NAMESPACE, get_if_exists=True).remote()
        return self._hub

    async def report(self, hub_name):
        """Pushes `text()` to the application's `MetricsHub` (made if
        missing), and the changes to Ray's export (`push_ray`, in a thread)."""
        if self.ray is not None:
            if self._pusher is None:
                self._pusher = concurrent.futures.ThreadPoolExecutor(1, "streamgen-metrics")
            try:
                await asyncio.get_running_loop().run_in_executor(self._pusher, self.push_ray)
            except Exception:  # noqa: BLE001  (Ray's export is best effort)
                pass
        try:
            await self._connect(hub_name).report.remote(self.replica, self.text())
        except Exception:  # noqa: BLE001  (its owner replica went away: made anew next time)
            self._hub = None

    async def scrape(self, hub_name):
        """The deployment's metrics: this replica's, fresh, and every other
        replica's last report, merged (bytes, Prometheus text format)."""
        mine = self.text()
        others = {}
        try:
            hub = self._connect(hub_name)
            await asyncio.wait_for(hub.report.remote(self.replica, mine), 10)
            others = await asyncio.wait_for(hub.texts.remote(STALE_AFTER_S), 10)
        except Exception:  # noqa: BLE001  (no hub: this replica alone)
            self._hub = None
        others.pop(self.replica, None)
        return merge([mine, *others.values()])


def _les(bounds):
    """The `le` labels of a histogram's buckets, as prometheus_client writes them."""
    return [floatToGoString(bound) for bound in tuple(bounds) + (math.inf,)]


class _Collector:
    """Yields a `ReplicaMetrics`' families from its numbers (at scrape)."""

    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        metrics, replica = self.metrics, [self.metrics.replica]
        for name, (kind, doc, labels, _) in SPECS.items():
            full = f"streamgen_{name}"
            if kind == "gauge":
                family = GaugeMetricFamily(full, doc, labels=["replica"])
                family.add_metric(replica, getattr(metrics, f"_{name}")())
            elif name == "errors":
                family = CounterMetricFamily(full, doc, labels=["replica", "kind"])
                for error_kind_, value in list(metrics.errors.items()):
                    family.add_metric(replica + [error_kind_], value)
            elif kind == "counter":
                family = CounterMetricFamily(full, doc, labels=["replica"])
                family.add_metric(replica, getattr(metrics, name))
            else:
                seen = getattr(metrics, name)
                total = seen.total
                buckets = list(zip(_les(seen.bounds), itertools.accumulate(seen.counts)))
                family = HistogramMetricFamily(full, doc, labels=["replica"])
                family.add_metric(replica, buckets, total)
            yield family


class NoMetrics:
    """`ReplicaMetrics`' interface, recording nothing (`build_app(metrics=False)`:
    to measure what the metrics cost)."""

    def instrument(self, batcher):
        return batcher

    def tick(self, rows, frames):
        pass

    def message(self, seconds, items=()):
        pass

    def error(self, kind, count=1):
        pass

    def dropped_idle(self, count):
        pass

    def text(self):
        return b""

    def push_ray(self):
        return 0

    async def report(self, hub_name):
        pass

    async def scrape(self, hub_name):
        return b""


def merge(texts):
    """Prometheus texts (bytes or str) -> one text: each family once, the
    samples of all (distinct label sets, e.g. one `replica` each).

    Example:

    >>> a = ReplicaMetrics("a"); b = ReplicaMetrics("b")
    >>> a.error("auth"); b.error("auth", 2)
    >>> text = merge([a.text(), b.text()]).decode()
    >>> text.count("# TYPE streamgen_errors_total counter")
    1
    >>> 'streamgen_errors_total{kind="auth",replica="b"} 2.0' in text
    True
    """
    families = {}
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        for family in text_string_to_metric_families(text):
            known = families.get(family.name)
            if known is None:
                families[family.name] = family
            else:
                known.samples.extend(family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)


class _Families:
    """A collector that yields parsed metric families as they are."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


class _RayExport:
    """The same metrics through `ray.serve.metrics` (Serve adds its tags).

    A histogram goes out as the series a Prometheus histogram is made of,
    each a Ray gauge holding the replica's cumulative value: `<name>_bucket`
    (tag `le`), `<name>_count`, `<name>_sum` (see the module's docstring).
    """

    def __init__(self):
        from ray.serve import metrics as serve_metrics

        for name, (kind, doc, labels, _) in SPECS.items():
            full = f"streamgen_{name}"
            if kind == "histogram":
                made = _RayHistogram(
                    serve_metrics.Gauge(f"{full}_bucket", f"{doc} (cumulative count per "
                                        "bucket, as a histogram's)", tag_keys=("le",)),
                    serve_metrics.Gauge(f"{full}_count", f"{doc} (count)"),
                    serve_metrics.Gauge(f"{full}_sum", f"{doc} (sum)"))
            elif kind == "gauge":
                made = serve_metrics.Gauge(full, doc, tag_keys=labels)
            else:
                made = serve_metrics.Counter(full, doc, tag_keys=labels)
            setattr(self, name, made)


class _RayHistogram:
    """A histogram's three series in Ray's export."""

    def __init__(self, bucket, count, sum_):
        self.bucket, self.count, self.sum = bucket, count, sum_


def _hub_class():
    import ray

    @ray.remote(num_cpus=0)
    class MetricsHub:
        """The last metrics text of each replica of one application."""

        def __init__(self):
            self.reports = {}

        def report(self, replica, text):
            self.reports[replica] = (time.monotonic(), text)

        def texts(self, max_age_s):
            now = time.monotonic()
            for replica in [r for r, (t, _) in self.reports.items() if now - t > max_age_s]:
                del self.reports[replica]
            return {replica: text for replica, (_, text) in self.reports.items()}

    return MetricsHub


class _LazyHub:
    """`MetricsHub`, defined (importing Ray) on first use."""

    _cls = None

    def __getattr__(self, name):
        if _LazyHub._cls is None:
            _LazyHub._cls = _hub_class()
        return getattr(_LazyHub._cls, name)


MetricsHub = _LazyHub()


def hub_name(app_name):
    """The name of an application's `MetricsHub` actor (namespace `HUB_NAMESPACE`)."""
    return f"streamgen-metrics-{app_name}"
