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

    class Histogram:
        def __init__(self):
            self.bucket, self.count, self.sum = (FakeRay.Metric() for _ in range(3))

    def __init__(self):
        from streamgen.serve.metrics import SPECS

        for name, (kind, *_) in SPECS.items():
            setattr(self, name, FakeRay.Histogram() if kind == "histogram" else FakeRay.Metric())

    def calls(self):
        """Every call since the last `calls()`, `{series: [call, ...]}`."""
        found = {}
        for name, metric in vars(self).items():
            parts = ({"": metric} if isinstance(metric, FakeRay.Metric) else
                     {"_bucket": metric.bucket, "_count": metric.count, "_sum": metric.sum})
            for suffix, part in parts.items():
                if part.calls:
                    found[name + suffix] = part.calls[:]
                    part.calls.clear()
        return found


def test_ray_export_pushed_in_batches_exactly():
    from streamgen.serve.metrics import ReplicaMetrics

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
    assert fake.calls() == {}  # nothing until the push
    calls = metrics.push_ray()
    sent = fake.calls()
    assert calls == sum(len(c) for c in sent.values())
    assert sent["outer_steps"] == [("inc", 3 + 1 + 64 + 5000 + 2, None)]
    assert sent["inner_steps"] == [("inc", 140, None)]
    assert sent["messages"] == [("inc", 7, None)]
    assert sent["errors"] == [("inc", 3, {"kind": "limit"})]
    assert "idle_drops" not in sent  # no delta, no call (Ray refuses inc(0))
    assert sent["open_streams"] == [("set", 3, None)]
    assert sent["connections"] == [("set", 0, None)]
    # A histogram: every bucket's cumulative count (prometheus_client's `le`
    # strings; 0.0005 twice and 0.005 once sit on a bound: counted at it),
    # the count and the sum, as gauges.
    les = ["0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
           "0.5", "1.0", "2.5", "+Inf"]
    assert sent["message_seconds_bucket"] == [
        ("set", n, {"le": le}) for le, n in zip(les, [3, 3, 3, 5, 5, 5, 5, 5, 5, 6, 6, 6, 7])]
    assert sent["message_seconds_count"] == [("set", 7, None)]
    assert sent["message_seconds_sum"] == [("set", pytest.approx(sum(WORKLOAD_MESSAGES)), None)]
    assert [c[1] for c in sent["tick_rows_bucket"]] == [1, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5]
    assert [c[1] for c in sent["tick_seconds_bucket"]] == [1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
                                                           3, 3]
    assert sent["tick_rows_sum"] == [("set", 5070.0, None)]

    # The next push sends the changes only; one with no change, the gauges only.
    metrics.tick(2, 0)
    metrics.message(0.01, [("error", "x", "bad")])
    metrics.dropped_idle(2)
    streams[0] = 1
    calls = metrics.push_ray()
    sent = fake.calls()
    assert calls == sum(len(c) for c in sent.values())
    assert sent.pop("outer_steps") == [("inc", 2, None)]
    assert sent.pop("messages") == [("inc", 1, None)]
    assert sent.pop("errors") == [("inc", 1, {"kind": "bad_request"})]
    assert sent.pop("idle_drops") == [("inc", 2, None)]
    assert sent.pop("open_streams") == [("set", 1, None)]
    assert sent.pop("connections") == [("set", 0, None)]
    assert sent.pop("tick_rows_bucket") == [  # 2 rows: the buckets from le=2 up
        ("set", n, {"le": le}) for le, n in zip(
            ["2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "128.0", "256.0", "512.0", "1024.0",
             "4096.0", "+Inf"], [3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 6])]
    assert sent.pop("tick_rows_count") == [("set", 6, None)]
    assert sent.pop("tick_rows_sum") == [("set", 5072.0, None)]
    assert [c[1] for c in sent.pop("message_seconds_bucket")] == [6, 6, 6, 6, 6, 7, 7, 7, 8]
    assert sent.pop("message_seconds_count") == [("set", 8, None)]
    assert sent.pop("message_seconds_sum")[0][1] == pytest.approx(sum(WORKLOAD_MESSAGES) + 0.01)
    assert sent == {}  # inner steps, tick seconds: unchanged
    assert metrics.push_ray() == 2
    assert set(fake.calls()) == {"open_streams", "connections"}
