"""Tests for `streamgen.offline.decode`: batch decoding of sequences and JSONL files."""

import io
import json

import numpy as np
import pytest

import streamgen as sg
from helpers import export_litert, make_model, ragged_to_lists
from streamgen.offline import decode as offline
from streamgen.data.text import frames_json


@pytest.fixture(scope="module")
def model():
    return make_model(seed=3, stop_scale=8.0)


@pytest.fixture(scope="module")
def sequences():
    """Twelve sequences of 1..12 steps, seeded."""
    rng = np.random.default_rng(5)
    return [rng.normal(size=(t, 3)).astype(np.float32) for t in range(12, 0, -1)]


def reference(model, sequences):
    """`model.decode`, one sequence at a time: the contract."""
    return [ragged_to_lists(model.decode(s[None]))[0] for s in sequences]


def assert_same(got, expected, atol=1e-5):
    assert len(got) == len(expected)
    for n, (a, b) in enumerate(zip(got, expected)):
        assert [len(o) for o in a] == [len(o) for o in b], f"sequence {n}"
        for t, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(np.reshape(x, (-1, 2)), np.reshape(y, (-1, 2)),
                                       atol=atol, err_msg=f"sequence {n}, Out[{t}]")


def test_length_batches():
    index = offline.length_batches(np.array([3, 1, 2, 1]), 3)
    assert [b.tolist() for b in index] == [[1, 3, 2], [0]]
    with pytest.raises(ValueError, match=r"argument `batch_size`, expected a positive integer, got 0"):
        offline.length_batches(np.array([1]), 0)


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_decode_sequences_equals_decode(model, sequences, batch_size):
    expected = reference(model, sequences)
    got = sg.decode_sequences(model, sequences, batch_size=batch_size)
    assert_same(got, expected)
    lengths = [[len(o) for o in s] for s in expected]
    assert len({n for s in lengths for n in s}) >= 4  # lengths do vary


def test_decode_padded_xla_step_loop_equals_graph(model, sequences):
    x, steps = offline.pad(sequences, 3)
    graph = offline.decode_padded(sg.open_runtime(model), x, steps)
    xla = offline.decode_padded(sg.open_runtime(model, jit_compile=True), x, steps)
    np.testing.assert_array_equal(graph[1], xla[1])
    np.testing.assert_allclose(graph[0], xla[0], atol=1e-5)
    real = np.arange(x.shape[1])[None, :] < steps[:, None]
    assert (graph[1][~real] == 0).all() and (graph[0][~real] == 0).all()


def test_decode_sequences_stop_and_cap(model, sequences):
    got = sg.decode_sequences(model, sequences, stop=[], max_steps=3)
    assert {len(o) for s in got for o in s} == {3}
    expected = [ragged_to_lists(model.decode(s[None], stop=sg.StopHead(0.9)))[0]
                for s in sequences]
    assert_same(sg.decode_sequences(model, sequences, stop=sg.StopHead(0.9)), expected)


@pytest.mark.slow  # a LiteRT conversion (~5 s)
def test_litert_equals_decode(model, sequences, tmp_path):
    pytest.importorskip("ai_edge_litert")
    path = str(tmp_path / "m.tflite")
    export_litert(model, path)
    runtime = sg.open_runtime(path)
    assert_same(sg.decode_sequences(runtime, sequences, batch_size=4),
                reference(model, sequences))
    # Forced lengths on LiteRT (by stepping) equal the in-graph forced decode.
    x, steps = offline.pad(sequences[:4], 3)
    forced = np.random.default_rng(1).integers(0, 10, size=steps.shape + (x.shape[1],))
    forced[np.arange(x.shape[1])[None, :] >= steps[:, None]] = 0
    got = offline.decode_padded(runtime, x, steps, lengths=forced)
    expected = offline.decode_padded(sg.open_runtime(model), x, steps, lengths=forced)
    np.testing.assert_array_equal(got[1], forced)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    # An open runtime takes other options without being opened again.
    capped = sg.decode_sequences(runtime, sequences, max_steps=3)
    assert_same(capped, sg.decode_sequences(sg.open_runtime(path, max_steps=3), sequences))
    assert max(len(out) for seq in capped for out in seq) <= 3
    assert sg.open_runtime(runtime) is runtime
    with pytest.raises(ValueError, match="Received `num_threads` with an open runtime"):
        sg.open_runtime(runtime, num_threads=2)


# ---------------------------------------------------------------- files


def write_data(path, sequences, ids=True, extra=None):
    with open(path, "w") as f:
        for n, s in enumerate(sequences):
            record = {"x": s.tolist()}
            if ids:
                record["id"] = f"s{n}" if n % 2 else n
            f.write(json.dumps(record) + "\n")
            if extra and n in extra:
                f.write(extra[n] + "\n")
    return str(path)


def test_decode_jsonl_lines_equal_decode_in_order_with_ids(model, sequences, tmp_path):
    path = write_data(tmp_path / "in.jsonl", sequences)
    out = io.StringIO()
    progress = []
    totals = sg.decode_jsonl(model, [path], out, batch_size=5,
                             progress=lambda n, s: progress.append((n, s)))
    assert totals == {"sequences": 12, "steps": 78, "skipped": 0}
    assert progress[-1] == (12, 78) and len(progress) == 3
    lines = out.getvalue().splitlines()
    expected = reference(model, sequences)
    for n, (line, outs) in enumerate(zip(lines, expected)):
        record = json.loads(line)
        assert list(record) == ["id", "y"] and record["id"] == (f"s{n}" if n % 2 else n)
        assert_same([record["y"]], [outs])
    # Each Out[i] exactly as `streamgen stream` prints it (6 significant
    # digits survive the round trip through float32).
    for line in lines:
        record = json.loads(line)
        outs = [frames_json(np.array(o, np.float32).reshape(-1, 2)) for o in record["y"]]
        assert line == '{"id":' + json.dumps(record["id"]) + ',"y":[' + ",".join(outs) + "]}"


def test_decode_jsonl_bad_records(model, sequences, tmp_path):
    bad = {2: '{"x": [[1, 2]]}', 4: "{oops", 6: '{"y": []}'}
    path = write_data(tmp_path / "in.jsonl", sequences[:8], ids=False, extra=bad)
    out = io.StringIO()
    with pytest.raises(ValueError) as err:
        sg.decode_jsonl(model, path, out, batch_size=64)
    assert str(err.value) == (f"{path}:4: field 'x[0]': width 2, expected 3 (input_size=3)")
    assert len(out.getvalue().splitlines()) == 3  # everything before it was written
    seen = []
    out = io.StringIO()
    totals = sg.decode_jsonl(model, path, out, batch_size=2, on_error=seen.append)
    assert totals == {"sequences": 8, "steps": 12 + 11 + 10 + 9 + 8 + 7 + 6 + 5, "skipped": 3}
    assert [str(e) for e in seen] == [
        f"{path}:4: field 'x[0]': width 2, expected 3 (input_size=3)",
        f"{path}:7: bad JSON: Expecting property name enclosed in double quotes at column 2",
        f"{path}:10: missing key 'x'"]
    assert_same([json.loads(l)["y"] for l in out.getvalue().splitlines()],
                reference(model, sequences[:8]))
    assert sg.decode_jsonl(model, path, io.StringIO(), on_error="skip")["skipped"] == 3


def test_decode_jsonl_reader_processes_give_the_same_lines(model, sequences, tmp_path):
    bad = {3: '{"x": [[1, 2]]}', 7: "[" * 1000 + "]" * 1000}
    path = write_data(tmp_path / "in.jsonl", sequences, extra=bad)
    here, there = io.StringIO(), io.StringIO()
    seen_here, seen_there = [], []
    a = sg.decode_jsonl(model, [path, path], here, batch_size=4, readers=0,
                        on_error=seen_here.append)
    b = sg.decode_jsonl(model, [path, path], there, batch_size=4, readers=1,
                        on_error=seen_there.append)
    assert a == b == {"sequences": 24, "steps": 156, "skipped": 4}
    assert here.getvalue() == there.getvalue()
    assert [str(e) for e in seen_here] == [str(e) for e in seen_there]
    assert str(seen_there[1]) == f"{path}:10: bad JSON: nested too deeply"


# ---------------------------------------------------------------------- #
# issue 21: memory bounded by the work in flight.
# ---------------------------------------------------------------------- #
LONG_STEPS = 5000  # record 100's steps; the other 4,095 records have one each
_MEMORY_SCRIPT = r"""
import json, resource, sys, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a runaway fails, not the machine
from streamgen.offline import decode as offline
model, data, out, long_steps = sys.argv[1:5]
with open(data, "w") as f:
    for n in range(4096):
        steps = int(long_steps) if n == 100 else 1
        f.write(json.dumps({"x": [[0.1, -0.2, 0.3]] * steps}) + "\n")
runtime = offline.as_runtime(model)
offline.decode_jsonl(runtime, [data], out, readers=0)  # warm-up: the interpreter's tensors
tracemalloc.start()
try:
    totals = offline.decode_jsonl(runtime, [data], out, readers=0)
except MemoryError:
    totals = "MemoryError"
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "totals": totals}))
"""


@pytest.mark.slow
def test_long_record_among_short_ones_decodes_in_bounded_memory(cli_tflite, tmp_path):
    """One 5,000-step record among 4,095 one-step ones, batch 4,096 (LiteRT, no TF).

    NumPy reports its allocations to tracemalloc: the peak must stay within
    the README's bound (`STEP_BUDGET` padded steps, ~100 bytes each for
    this model, plus the records), not batch x longest (2.5 GB without `chunks`).
    """
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, cli_tflite,
                          str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"),
                          str(LONG_STEPS)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["totals"] == {"sequences": 4096, "steps": 4095 + LONG_STEPS,
                                 "skipped": 0}
    assert result["peak"] < 200 << 20, result
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [len(json.loads(line)["y"]) for line in lines] == [LONG_STEPS if n == 100 else 1
                                                              for n in range(4096)]


def test_chunks_bound_rows_times_longest():
    """`chunks` cuts before rows x longest passes the budget; a long record alone."""
    from streamgen.data import jsonl
    from streamgen.offline import decode as offline

    def record(n, steps):
        return jsonl.Record("f", n + 1, np.zeros((steps, 3), np.float32), None, None, {})

    steps = [1] * 10 + [50] + [1] * 5 + [200] + [1] * 3
    records = [record(n, s) for n, s in enumerate(steps)]
    cut = [[r.line_no for r in chunk] for chunk, _ in
           offline.chunks(records, batch_size=8, step_budget=100)]
    assert cut == [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10], [11, 12], [13, 14, 15, 16], [17],
                   [18, 19, 20]]
    for chunk in cut:
        longest = max(steps[n - 1] for n in chunk)
        assert len(chunk) == 1 or len(chunk) * longest <= 100


def test_seeds_are_derived_only_when_the_rows_sample(monkeypatch):
    """A greedy decode does not depend on seeds, so `format_lines` derives
    none (a Philox block per record cost ~20 us, ~30% of `streamgen decode`
    on a `.tflite`); with a sampled STOP each record gets its own, and the
    lines differ from the greedy ones."""
    from streamgen import randomness
    from streamgen.data import jsonl

    model = make_model(seed=4)
    rng = np.random.default_rng(1)
    records = [jsonl.Record("f.jsonl", n + 1, rng.normal(size=(3, 3)).astype(np.float32),
                            None, None, {"x": []}) for n in range(6)]
    derived = []
    real = randomness.derive_seed
    monkeypatch.setattr(randomness, "derive_seed",
                        lambda seed, key: derived.append(key) or real(seed, key))
    greedy = offline.format_lines(sg.open_runtime(model), records, seed=3)
    assert derived == [] and len(greedy) == 6
    sampled = offline.format_lines(sg.open_runtime(model, stop=[sg.StopSample(1.0)]),
                                   records, seed=3)
    assert derived == [0, 1, 2, 3, 4, 5]
    assert sampled != greedy
