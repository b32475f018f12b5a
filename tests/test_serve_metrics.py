"""`streamgen.serve.metrics` without Ray: a replica's registry, merging replicas (fast)."""

import pytest

parser = pytest.importorskip("prometheus_client.parser")


def test_merge_two_replicas():
    from streamgen.serve.metrics import ReplicaMetrics, merge

    a, b = ReplicaMetrics("a", open_streams=lambda: 2), ReplicaMetrics("b", connections=lambda: 4)
    a.tick(3, 7)
    b.tick(5, 0)
    b.tick(1, 2)
    text = merge([a.text(), b.text()]).decode()
    assert text.count("# TYPE streamgen_tick_rows histogram") == 1
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    samples = {(s.name, s.labels.get("replica")): s.value
               for f in families.values() for s in f.samples if "le" not in s.labels
               and "kind" not in s.labels}
    assert samples[("streamgen_tick_rows_count", "a")] == 1
    assert samples[("streamgen_tick_rows_count", "b")] == 2
    assert samples[("streamgen_outer_steps_total", "b")] == 6
    assert samples[("streamgen_inner_steps_total", "a")] == 7
    assert samples[("streamgen_open_streams", "a")] == 2
    assert samples[("streamgen_connections", "b")] == 4


def test_errors_and_messages_by_kind():
    from streamgen.serve.metrics import KINDS, ReplicaMetrics, error_kind

    metrics = ReplicaMetrics("r")
    metrics.message(0.002, [("out", "a", None), ("error", "b", "expected 3 numbers"),
                            ("error", "c", "maximum of 8 streams (--max-streams); close some"),
                            ("error", "d", "after 3 s without a request (--idle-timeout); ..."),
                            ("ok", "e", None)])
    metrics.error("auth", 2)
    metrics.dropped_idle(3)
    text = metrics.text().decode()
    values = {(s.name, s.labels.get("kind")): s.value
              for f in parser.text_string_to_metric_families(text) for s in f.samples
              if "le" not in s.labels}
    assert {k: values[("streamgen_errors_total", k)] for k in KINDS} == {
        "bad_request": 1, "auth": 2, "origin": 0, "limit": 1, "oversize": 0, "expired": 1,
        "internal": 0}
    assert values[("streamgen_messages_total", None)] == 1
    assert values[("streamgen_message_seconds_sum", None)] == pytest.approx(0.002)
    assert values[("streamgen_idle_drops_total", None)] == 3
    assert error_kind("internal error of the server: OSError") == "internal"


WORKLOAD_TICKS = [(3, 7), (1, 0), (64, 130), (5000, 1), (2, 2)]
WORKLOAD_MESSAGES = [0.0001, 0.0005, 0.004, 0.005, 0.3, 7.0, 0.0005]
WORKLOAD_STEPS = [0.0002, 0.02, 0.001]


def families(text):
    """`{name: (type, help, {(sample name, labels): value})}` of a Prometheus text."""
    if isinstance(text, bytes):
        text = text.decode()
    return {f.name: (f.type, f.documentation,
                     {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples})
            for f in parser.text_string_to_metric_families(text)}


def test_same_text_as_prometheus_client_objects():
    """The collector over plain numbers writes what prometheus_client's own
    Counter/Gauge/Histogram write for the same observations."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    from streamgen.serve.metrics import SPECS, ReplicaMetrics

    metrics = ReplicaMetrics("r", open_streams=lambda: 5, connections=lambda: 2)
    registry = CollectorRegistry()
    made = {}
    for name, (kind, doc, labels, buckets) in SPECS.items():
        cls = {"gauge": Gauge, "counter": Counter, "histogram": Histogram}[kind]
        made[name] = cls(f"streamgen_{name}", doc, ("replica",) + labels, registry=registry,
                         **({"buckets": buckets} if buckets else {}))
    made["open_streams"].labels("r").set(5)
    made["connections"].labels("r").set(2)
    for kind in ("bad_request", "auth", "origin", "limit", "oversize", "expired", "internal"):
        made["errors"].labels("r", kind)  # zero series, as the collector writes them
    for rows, frames in WORKLOAD_TICKS:
        metrics.tick(rows, frames)
        made["tick_rows"].labels("r").observe(rows)
        made["outer_steps"].labels("r").inc(rows)
        made["inner_steps"].labels("r").inc(frames)
    for seconds in WORKLOAD_MESSAGES:
        metrics.message(seconds, [("error", "a", "internal error of the server: X")])
        made["messages"].labels("r").inc()
        made["message_seconds"].labels("r").observe(seconds)
        made["errors"].labels("r", "internal").inc()
    for seconds in WORKLOAD_STEPS:
        metrics.tick_seconds.observe(seconds)
        made["tick_seconds"].labels("r").observe(seconds)
    metrics.error("auth", 2)
    made["errors"].labels("r", "auth").inc(2)
    metrics.dropped_idle(4)
    made["idle_drops"].labels("r").inc(4)
    assert families(metrics.text()) == families(generate_latest(registry))


class FakeRay:
    """`_RayExport`'s attributes, recording every call."""

    class Metric:
        def __init__(self):
            self.calls = []

        def inc(self, value, tags=None):
            assert value > 0 and isinstance(value, (int, float))  # as Ray demands
            self.calls.append(("inc", value, tags))

        def set(self, value, tags=None):
            self.calls.append(("set", value, tags))

        def observe(self, value, tags=None):
            self.calls.append(("observe", value, tags))

    def __init__(self):
        from streamgen.serve.metrics import SPECS

        for name in SPECS:
            setattr(self, name, FakeRay.Metric())


def test_ray_export_pushed_in_batches_exactly():
    from streamgen.serve.metrics import ROW_BUCKETS, SECOND_BUCKETS, ReplicaMetrics

    fake = FakeRay()
    streams = [3]
    metrics = ReplicaMetrics("r", open_streams=lambda: streams[0], ray_export=fake)
    for rows, frames in WORKLOAD_TICKS:
        metrics.tick(rows, frames)
    for seconds in WORKLOAD_MESSAGES:
        metrics.message(seconds)
    for seconds in WORKLOAD_STEPS:
        metrics.tick_seconds.observe(seconds)
    metrics.error("limit", 3)
    assert all(not m.calls for m in vars(fake).values())  # nothing until the push
    calls = metrics.push_ray()
    assert fake.outer_steps.calls == [("inc", 3 + 1 + 64 + 5000 + 2, None)]
    assert fake.inner_steps.calls == [("inc", 140, None)]
    assert fake.messages.calls == [("inc", 7, None)]
    assert fake.errors.calls == [("inc", 3, {"kind": "limit"})]
    assert fake.idle_drops.calls == []  # no delta, no call (Ray refuses inc(0))
    assert fake.open_streams.calls == [("set", 3, None)]
    assert fake.connections.calls == [("set", 0, None)]

    def buckets(values, bounds):  # Prometheus' `le`: (bound before, bound]
        return [sum(1 for v in values if (i == 0 or v > bounds[i - 1])
                    and (i == len(bounds) or v <= bounds[i])) for i in range(len(bounds) + 1)]

    # Ray's histograms: the same observations per bucket (upper bound
    # inclusive, as Prometheus' `le` and OpenTelemetry's), the same sum.
    # 0.0005 twice and 0.005 once sit on a bound: still in their bucket.
    for name, seen, bounds in (("tick_rows", WORKLOAD_TICKS, ROW_BUCKETS),
                               ("message_seconds", WORKLOAD_MESSAGES, SECOND_BUCKETS),
                               ("tick_seconds", WORKLOAD_STEPS, SECOND_BUCKETS)):
        values = [v[0] if isinstance(v, tuple) else v for v in seen]
        sent = [value for _, value, _ in getattr(fake, name).calls]
        assert buckets(sent, bounds) == buckets(values, bounds), name
        assert sum(sent) == pytest.approx(sum(values), rel=1e-12), name
    assert calls == 4 + 2 + len(WORKLOAD_TICKS) + len(WORKLOAD_MESSAGES) + len(WORKLOAD_STEPS)

    # The next push sends the changes only; one with no change, the gauges only.
    for m in vars(fake).values():
        m.calls.clear()
    metrics.tick(2, 0)
    metrics.message(0.01, [("error", "x", "bad")])
    metrics.dropped_idle(2)
    streams[0] = 1
    assert metrics.push_ray() == 4 + 2 + 2  # 4 counters, 2 gauges, 2 observations
    assert fake.outer_steps.calls == [("inc", 2, None)]
    assert fake.inner_steps.calls == []
    assert fake.messages.calls == [("inc", 1, None)]
    assert fake.errors.calls == [("inc", 1, {"kind": "bad_request"})]
    assert fake.idle_drops.calls == [("inc", 2, None)]
    assert fake.tick_rows.calls == [("observe", 2.0, None)]
    assert fake.message_seconds.calls == [("observe", 0.01, None)]
    assert fake.open_streams.calls == [("set", 1, None)]
    for m in vars(fake).values():
        m.calls.clear()
    assert metrics.push_ray() == 2
    assert [name for name, m in vars(fake).items() if m.calls] == ["open_streams", "connections"]


def test_bucket_mean_kept_inside_its_bucket():
    from streamgen.serve.metrics import _inside

    bounds = (0.1, 0.2)
    assert _inside(0.2 + 1e-17, bounds, 1) == 0.2  # rounding over the upper bound
    assert 0.1 < _inside(0.1, bounds, 1) < 0.1 + 1e-15  # on the lower bound: just above
    assert _inside(0.15, bounds, 1) == 0.15
    assert _inside(-3.0, bounds, 0) == -3.0 and _inside(9.0, bounds, 2) == 9.0
