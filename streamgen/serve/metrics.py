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
| `streamgen_tick_rows` | histogram | rows of one batched tick |
| `streamgen_tick_seconds` | histogram | the batched step of one tick |
| `streamgen_message_seconds` | histogram | a message, from receipt to reply sent |

The same values go to Ray's own export (`ray.serve.metrics`, names as
above; Serve adds its deployment, replica and application tags) for
clusters already scraped through Ray.

`GET /metrics` answers for the whole deployment: every replica pushes its
registry's text (`REPORT_EVERY_S`) to one `MetricsHub` actor per
application; the replica that takes the scrape merges its own fresh text
with the others' (`merge`, through `prometheus_client`'s parser), so one
HELP/TYPE per family and a series per replica.
"""

import asyncio
import time

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

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
    "open_streams": (Gauge, "Streams (state table rows) open on the replica.", (), None),
    "connections": (Gauge, "WebSocket connections open on the replica.", (), None),
    "outer_steps": (Counter, "Outer steps run (stream inputs stepped).", (), None),
    "inner_steps": (Counter, "Inner steps emitted (frames of the Out[i] sent).", (), None),
    "messages": (Counter, "WebSocket messages answered.", (), None),
    "errors": (Counter, "Refused requests and error replies, by kind.", ("kind",), None),
    "idle_drops": (Counter, "Streams dropped after --idle-timeout without a request.", (), None),
    "tick_rows": (Histogram, "Rows (stream steps) of one batched tick.", (), ROW_BUCKETS),
    "tick_seconds": (Histogram, "Duration of one tick's batched step, seconds.", (),
                     SECOND_BUCKETS),
    "message_seconds": (Histogram, "A WebSocket message from receipt to reply sent, seconds.",
                        (), SECOND_BUCKETS),
}


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
        ray_export: also record into `ray.serve.metrics` (only inside a
            Serve replica).

    Example:

    >>> metrics = ReplicaMetrics("r1", open_streams=lambda: 3, connections=lambda: 1)
    >>> metrics.error("auth")
    >>> b'streamgen_errors_total{kind="auth",replica="r1"} 1.0' in metrics.text()
    True
    """

    def __init__(self, replica, open_streams=lambda: 0, connections=lambda: 0,
                 ray_export=False):
        self.replica = str(replica)
        self.registry = CollectorRegistry(auto_describe=True)
        self._open_streams, self._connections = open_streams, connections
        made = {}
        for name, (kind, doc, labels, buckets) in SPECS.items():
            extra = {"buckets": buckets} if buckets else {}
            made[name] = kind(f"streamgen_{name}", doc, ("replica",) + labels,
                              registry=self.registry, **extra)
        self.open_streams = made["open_streams"].labels(self.replica)
        self.open_streams.set_function(lambda: self._open_streams())
        self.connections = made["connections"].labels(self.replica)
        self.connections.set_function(lambda: self._connections())
        self.outer_steps = made["outer_steps"].labels(self.replica)
        self.inner_steps = made["inner_steps"].labels(self.replica)
        self.messages = made["messages"].labels(self.replica)
        self.errors = {k: made["errors"].labels(self.replica, k) for k in KINDS}
        self.idle_drops = made["idle_drops"].labels(self.replica)
        self.tick_rows = made["tick_rows"].labels(self.replica)
        self.tick_seconds = made["tick_seconds"].labels(self.replica)
        self.message_seconds = made["message_seconds"].labels(self.replica)
        self.ray = _RayExport() if ray_export else None
        self._hub = None

    # ------------------------------------------------------------------ #
    # Recording.
    # ------------------------------------------------------------------ #
    def instrument(self, batcher):
        """Counts every tick of `batcher` (a `batcher.Batcher`): wraps its
        `step` (timed; run in the step thread) and `scatter` (rows, frames)."""
        step, scatter = batcher.step, batcher.scatter

        def timed_step(rows, *arguments):
            start = time.perf_counter()
            try:
                return step(rows, *arguments)
            finally:
                seconds = time.perf_counter() - start
                self.tick_seconds.observe(seconds)
                if self.ray is not None:
                    self.ray.tick_seconds.observe(seconds)

        def counted_scatter(rows, result):
            outs = scatter(rows, result)
            self.tick(len(rows), int(result[1].sum()))
            return outs

        batcher.step, batcher.scatter = timed_step, counted_scatter
        return batcher

    def tick(self, rows, frames):
        """One tick stepped `rows` streams and emitted `frames` inner steps."""
        self.tick_rows.observe(rows)
        self.outer_steps.inc(rows)
        self.inner_steps.inc(frames)
        if self.ray is not None:
            self.ray.tick_rows.observe(rows)
            self.ray.outer_steps.inc(rows)
            if frames:
                self.ray.inner_steps.inc(frames)

    def message(self, seconds, items=()):
        """A WebSocket message answered `seconds` after receipt; its reply
        `items` (`(kind, id, value)`, see `session.Session.handle`) are
        scanned for errors."""
        self.messages.inc()
        self.message_seconds.observe(seconds)
        if self.ray is not None:
            self.ray.messages.inc()
            self.ray.message_seconds.observe(seconds)
        for kind, _, value in items:
            if kind == "error":
                self.error(error_kind(value))

    def error(self, kind, count=1):
        """`count` errors of `kind` (one of `KINDS`)."""
        self.errors[kind].inc(count)
        if self.ray is not None:
            self.ray.errors.inc(count, tags={"kind": kind})

    def dropped_idle(self, count):
        """`count` streams dropped by `--idle-timeout`."""
        if count:
            self.idle_drops.inc(count)
            if self.ray is not None:
                self.ray.idle_drops.inc(count)

    # ------------------------------------------------------------------ #
    # Reading.
    # ------------------------------------------------------------------ #
    def text(self):
        """This replica's metrics in the Prometheus text format (bytes)."""
        if self.ray is not None:
            self.ray.open_streams.set(self._open_streams())
            self.ray.connections.set(self._connections())
        return generate_latest(self.registry)

    async def report(self, hub_name):
        """Pushes `text()` to the application's `MetricsHub` (made if missing)."""
        try:
            if self._hub is None:
                self._hub = MetricsHub.options(
                    name=hub_name, namespace=HUB_NAMESPACE, get_if_exists=True).remote()
            await self._hub.report.remote(self.replica, self.text())
        except Exception:  # noqa: BLE001  (its owner replica went away: made anew next time)
            self._hub = None

    async def scrape(self, hub_name):
        """The deployment's metrics: this replica's, fresh, and every other
        replica's last report, merged (bytes, Prometheus text format)."""
        mine = self.text()
        others = {}
        try:
            if self._hub is None:
                self._hub = MetricsHub.options(
                    name=hub_name, namespace=HUB_NAMESPACE, get_if_exists=True).remote()
            await asyncio.wait_for(self._hub.report.remote(self.replica, mine), 10)
            others = await asyncio.wait_for(self._hub.texts.remote(STALE_AFTER_S), 10)
        except Exception:  # noqa: BLE001  (no hub: this replica alone)
            self._hub = None
        others.pop(self.replica, None)
        return merge([mine, *others.values()])


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
    """The same metrics through `ray.serve.metrics` (Serve adds its tags)."""

    def __init__(self):
        from ray.serve import metrics as serve_metrics

        def make(name):
            kind, doc, labels, buckets = SPECS[name]
            full = f"streamgen_{name}"
            if kind is Histogram:
                return serve_metrics.Histogram(full, doc, boundaries=list(buckets),
                                               tag_keys=labels)
            if kind is Gauge:
                return serve_metrics.Gauge(full, doc, tag_keys=labels)
            return serve_metrics.Counter(full, doc, tag_keys=labels)

        for name in SPECS:
            setattr(self, name, make(name))


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
