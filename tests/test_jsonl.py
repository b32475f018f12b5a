"""Tests for `streamgen.data.jsonl`: load/save, streaming records, file:line errors."""

import json

import numpy as np
import pytest

from helpers import toy_data
from streamgen.data.jsonl import RecordError, expand_paths, load_jsonl, read_records, save_jsonl


def test_jsonl_round_trip(tmp_path):
    inputs, targets = toy_data(6)
    targets[0][0] = []  # an empty Out written as []
    path = str(tmp_path / "d.jsonl")
    assert save_jsonl(path, inputs, targets) == path
    inputs2, targets2 = load_jsonl(path, max_steps=9, input_size=3, output_size=2)
    assert len(inputs2) == 6
    for a, b in zip(inputs, inputs2):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)  # bit for bit
    for s, s2 in zip(targets, targets2):
        assert len(s) == len(s2)
        for o, o2 in zip(s, s2):
            assert o2.dtype == np.float32 and o2.shape == (len(o), 2)
            np.testing.assert_array_equal(np.reshape(o, (-1, 2)), o2)
    # Saved again: the same bytes.
    save_jsonl(tmp_path / "e.jsonl", inputs2, targets2)
    assert (tmp_path / "e.jsonl").read_bytes() == (tmp_path / "d.jsonl").read_bytes()
    # float64 keeps its own shortest repr; loading casts to float32.
    save_jsonl(tmp_path / "f.jsonl", [np.array([[0.1, 1 / 3, 1e-7]])], [[[]]])
    line = (tmp_path / "f.jsonl").read_text()
    assert line == '{"x":[[0.1,0.3333333333333333,1e-07]],"y":[[]]}\n'
    x, y = load_jsonl(tmp_path / "f.jsonl")
    np.testing.assert_array_equal(x[0], np.float32([[0.1, 1 / 3, 1e-7]]))
    assert y[0][0].shape == (0, 0)  # no frame anywhere: width unknown


def test_load_jsonl_blank_lines_and_widths_from_later_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('\n{"x": [[1, 2]], "y": [[]]}\n   \n{"x": [[3, 4], [5, 6]], "y": [[[1.5]], []], "id": 7}\n\n')
    inputs, targets = load_jsonl(path, max_steps=1)
    assert [x.tolist() for x in inputs] == [[[1, 2]], [[3, 4], [5, 6]]]
    assert [[o.shape for o in s] for s in targets] == [[(0, 1)], [(1, 1), (0, 1)]]


VALID = '{"x": [[0.0, 0.5, 1.0], [1, 2, 3]], "y": [[[0.1, 0.2]], []]}'


@pytest.mark.parametrize("line, message", [
    ('{"x": [[1, 2, 3]], "y": [[]]', "bad JSON: Expecting ',' delimiter at column 29"),
    ("[1, 2, 3]", "expected a JSON object with keys 'x' and 'y', got list"),
    ('{"y": [[]]}', "missing key 'x'"),
    ('{"x": [[1, 2, 3]]}', "missing key 'y'"),
    ('{"x": [[1, 2, 3], [1, 2]], "y": [[], []]}', "field 'x[1]': width 2, expected 3 (input_size=3)"),
    ('{"x": [[1, 2, 3, 4]], "y": [[]]}', "field 'x[0]': width 4, expected 3 (input_size=3)"),
    ('{"x": [[]], "y": [[]]}', "field 'x[0]': an empty vector (width 0)"),
    ('{"x": 5, "y": []}', "field 'x': expected a list of input vectors, got int"),
    ('{"x": [5], "y": [[]]}', "field 'x[0]': expected a list of numbers, got int"),
    ('{"x": [[1, 2, 3]], "y": [[[1, 2], [1, 2, 3]]]}', "field 'y[0][1]': width 3, expected 2 (output_size=2)"),
    ('{"x": [[1, 2, 3]], "y": [[[1]]]}', "field 'y[0][0]': width 1, expected 2 (output_size=2)"),
    ('{"x": [[1, 2, 3]], "y": [[], []]}', "field 'y': 2 outer steps, but 'x' has 1"),
    ('{"x": [[1, 2, 3]], "y": {}}', "field 'y': expected a list of frame lists, got dict"),
    ('{"x": [[1, 2, 3]], "y": [5]}', "field 'y[0]': expected a list of frames, got int"),
    ('{"x": [[1, 2, 3]], "y": [' + json.dumps([[0, 0]] * 12) + "]}", "field 'y[0]': 12 frames, more than max_steps=9"),
    ('{"x": [[1, NaN, 3]], "y": [[]]}', "field 'x[0][1]': not a finite float32 number (nan)"),
    ('{"x": [[1, 2, 3]], "y": [[[-Infinity, 0]]]}', "field 'y[0][0][0]': not a finite float32 number (-inf)"),
    ('{"x": [[1, 2, 1e39]], "y": [[]]}', "field 'x[0][2]': not a finite float32 number (1e+39)"),
    ('{"x": [[1, "2", 3]], "y": [[]]}', "field 'x[0][1]': expected a number, got \"2\""),
    ('{"x": [[1, 2, true]], "y": [[]]}', "field 'x[0][2]': expected a number, got true"),
    ('{"x": [[1, 2, 3]], "y": [[[null, 1]]]}', "field 'y[0][0][0]': expected a number, got null"),
    ('{"x": [], "y": []}', "field 'x': no outer steps (T = 0); every sequence needs T >= 1"),
], ids=["bad-json", "not-object", "missing-x", "missing-y", "x-ragged", "x-width", "x-empty-vector",
        "x-not-list", "x-row-not-list", "y-ragged", "y-width", "len-mismatch", "y-not-list", "y-step-not-list",
        "over-max-steps", "nan", "infinity", "float32-overflow", "string", "boolean", "null", "T-zero"])
def test_load_jsonl_malformed(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    path.write_text(VALID + "\n\n" + line + "\n" + VALID + "\n")
    with pytest.raises(ValueError) as err:
        load_jsonl(path, max_steps=9, input_size=3, output_size=2)
    assert str(err.value) == f"{path}:3: {message}"


def test_load_jsonl_widths_must_agree_across_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"x": [[1, 2]], "y": [[]]}\n{"x": [[1, 2]], "y": [[[1, 2]]]}\n'
                    '{"x": [[1, 2, 3]], "y": [[]]}\n')
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    assert str(err.value) == f"{path}:3: field 'x[0]': width 3, expected 2 (as in field 'x[0]' on line 1)"
    path.write_text('{"x": [[1, 2]], "y": [[[1, 2]]]}\n{"x": [[1, 2]], "y": [[[1, 2, 3]]]}\n')
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    assert str(err.value) == f"{path}:2: field 'y[0][0]': width 3, expected 2 (as in field 'y[0][0]' on line 1)"


def test_load_jsonl_not_utf8_empty_and_missing(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(VALID.encode() + b'\n{"x": [[1, 2, 3]], "y": [[]], "note": "\xff"}\n')
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    assert str(err.value) == f"{path}:2: not valid UTF-8 (invalid start byte at byte 39)"
    path.write_text("\n  \n")
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    assert str(err.value) == f"{path}: no sequences"
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")
    # A byte order mark and CRLF line endings are fine.
    path.write_bytes(b"\xef\xbb\xbf" + VALID.encode() + b"\r\n")
    inputs, _ = load_jsonl(path)
    assert inputs[0].shape == (2, 3)




# ---------------------------------------------------------------- nesting (issue 11, item 7)


@pytest.mark.parametrize("line", [
    "[" * 1000 + "]" * 1000,
    '{"x": ' + "[" * 1000 + "]" * 1000 + ', "y": []}',
    "[" * 100_000,
])
def test_deep_nesting_is_a_value_error_with_file_and_line(tmp_path, line):
    path = tmp_path / "deep.jsonl"
    path.write_text(VALID + "\n" + line + "\n")
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    assert str(err.value) == f"{path}:2: bad JSON: nested too deeply"
    errors = [r for r in read_records([path], on_error="yield") if isinstance(r, RecordError)]
    assert [str(e) for e in errors] == [f"{path}:2: bad JSON: nested too deeply"]


def test_nested_list_where_a_number_belongs(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"x": [[1, 2, ' + "[" * 500 + "]" * 500 + ']], "y": [[]]}\n')
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    assert str(err.value) == f"{path}:1: field 'x[0][2]': expected a number, got a list"


# ---------------------------------------------------------------- streaming records


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_read_records_many_files_and_globs_in_order(tmp_path):
    inputs, targets = toy_data(6)
    save_jsonl(tmp_path / "all.jsonl", inputs, targets)
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    write(tmp_path / "part-1.jsonl", lines[:2])
    write(tmp_path / "part-2.jsonl", ["", *lines[2:5]])
    write(tmp_path / "z.jsonl", lines[5:])
    records = list(read_records([str(tmp_path / "part-*.jsonl"), tmp_path / "z.jsonl"],
                                max_steps=9))
    assert [(r.path.rsplit("/", 1)[1], r.line_no) for r in records] == [
        ("part-1.jsonl", 1), ("part-1.jsonl", 2), ("part-2.jsonl", 2), ("part-2.jsonl", 3),
        ("part-2.jsonl", 4), ("z.jsonl", 1)]
    for record, x, y in zip(records, inputs, targets):
        np.testing.assert_array_equal(record.inputs, x)
        assert record.lengths.tolist() == [len(o) for o in y]
        np.testing.assert_array_equal(record.frames, np.concatenate(y))
    assert expand_paths(str(tmp_path / "part-*.jsonl")) == [
        str(tmp_path / "part-1.jsonl"), str(tmp_path / "part-2.jsonl")]
    with pytest.raises(FileNotFoundError, match=r"nothing-\*\.jsonl: no file matches"):
        list(read_records(str(tmp_path / "nothing-*.jsonl")))


def test_widths_must_agree_across_files(tmp_path):
    a = write(tmp_path / "a.jsonl", ['{"x": [[1, 2]], "y": [[[1, 2]]]}'])
    b = write(tmp_path / "b.jsonl", ['{"x": [[1, 2]], "y": [[[1, 2, 3]]]}'])
    with pytest.raises(ValueError) as err:
        list(read_records([a, b]))
    assert str(err.value) == (f"{b}:1: field 'y[0][0]': width 3, expected 2 "
                              f"(as in field 'y[0][0]' on line 1 of {a})")


def test_on_error_yield_goes_on(tmp_path):
    path = write(tmp_path / "d.jsonl", [VALID, '{"x": [[1, 2, true]], "y": [[]]}', "nope", VALID])
    items = list(read_records(path, on_error="yield"))
    assert [type(i).__name__ for i in items] == ["Record", "RecordError", "RecordError", "Record"]
    assert str(items[1]) == f"{path}:2: field 'x[0][2]': expected a number, got true"
    assert str(items[2]).startswith(f"{path}:3: bad JSON: Expecting value")


def test_targets_false_ignores_y(tmp_path):
    path = write(tmp_path / "d.jsonl", ['{"x": [[1, 2, 3]], "id": 1}', '{"x": [[1, 2, 3]], "y": 7}'])
    records = list(read_records(path, targets=False, input_size=3))
    assert [r.lengths for r in records] == [None, None]
    assert records[0].data["id"] == 1


@pytest.mark.parametrize("x, message", [
    ("[[1, 2, 3e38], [1, 2, 4e38]]", "field 'x[1][2]': not a finite float32 number (4e+38)"),
    ("[[1, 2, 3], [1, 2, 1" + "0" * 44 + "]]",
     "field 'x[1][2]': not a finite float32 number (1" + "0" * 23 + ")"),
    ("[[1, 2, 3], [1, 2]]", "field 'x[1]': width 2, expected 3 (as in field 'x[0]' on line 1)"),
    ("[[1, 2, 3], [false, 2, 3]]", "field 'x[1][0]': expected a number, got false"),
])
def test_vectorised_checks_find_the_same_field(tmp_path, x, message):
    path = write(tmp_path / "d.jsonl", ['{"x": ' + x + ', "y": [[], []]}'])
    with pytest.raises(ValueError) as err:
        load_jsonl(path)
    assert str(err.value) == f"{path}:1: {message}"
