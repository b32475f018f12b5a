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
