"""Tests for `streamgen.data.lines`: the stdin line reader of `streamgen stream`."""

import io
import json
import os
import queue
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from streamgen.data.lines import (MAX_LINE_BYTES, BadLine, InputLineError,
                                  Reset, Vector, format_error, parse_vector,
                                  read_events)


def events(data, input_size=3, **kwargs):
    return list(read_events(io.BytesIO(data), input_size, **kwargs))


def summary(evs):
    """Events as plain tuples: ("V", line, [floats]) / ("R", line) / ("B", line, msg)."""
    out = []
    for ev in evs:
        if isinstance(ev, Vector):
            assert ev.values.dtype == np.float32 and ev.values.ndim == 1
            out.append(("V", ev.line_no, ev.values.tolist()))
        elif isinstance(ev, Reset):
            out.append(("R", ev.line_no))
        else:
            assert isinstance(ev, BadLine)
            out.append(("B", ev.line_no, ev.message))
    return out


class GatedStream:
    """A binary stream that fails any read beyond the bytes released so far.

    It also checks that every `readline` has a positive, bounded limit.
    """

    def __init__(self, data, max_limit=None):
        self.data, self.pos, self.released = data, 0, 0
        self.max_limit = max_limit
        self.calls = []

    def release(self, n=None):
        self.released = len(self.data) if n is None else self.released + n

    def readline(self, limit=-1):
        assert isinstance(limit, int) and limit > 0, f"unbounded readline({limit})"
        if self.max_limit is not None:
            assert limit <= self.max_limit, f"readline({limit}) too large"
        if self.pos >= self.released and self.pos < len(self.data):
            raise AssertionError(f"read past released data at offset {self.pos}")
        end = self.data.find(b"\n", self.pos, self.released)
        end = self.released if end < 0 else end + 1
        end = min(end, self.pos + limit)
        chunk = self.data[self.pos:end]
        self.pos = end
        self.calls.append((limit, len(chunk)))
        return chunk


# --- malformed lines -------------------------------------------------------

MALFORMED = [
    (b"1 2\n", "expected 3 numbers, got 2"),
    (b"1 2 3 4\n", "expected 3 numbers, got 4"),
    (b"[]\n", "expected 3 numbers, got 0"),
    (b"[1, 2, 3, 4]\n", "expected 3 numbers, got 4"),
    (b"1 abc 3\n", "field 2: not a number: 'abc'"),
    (b"abc\n", "field 1: not a number: 'abc'"),  # a bad field beats the count
    (b"1,,2,3\n", "field 2: not a number: ''"),
    (b"1,2,3,\n", "field 4: not a number: ''"),
    (b"1 2 3 # note\n", "field 4: not a number: '#'"),
    (b"1_000 2 3\n", "field 1: not a number: '1_000'"),
    (b"0x10 2 3\n", "field 1: not a number: '0x10'"),
    ("1 \u0663 3\n".encode(), "field 2: not a number: '\u0663'"),  # Arabic 3
    (b"1 2 " + b"x" * 50 + b"\n", "field 3: not a number: '" + "x" * 20 + "...'"),
    (b"1 \x00 3\n", "field 2: not a number: '\\x00'"),
    (b"1 2\x073\n", "field 2: not a number: '2\\x073'"),
    (b"nan 1 2\n", "field 1: not a finite number: 'nan'"),
    (b"1 inf 2\n", "field 2: not a finite number: 'inf'"),
    (b"1 2 -Infinity\n", "field 3: not a finite number: '-Infinity'"),
    (b"1 2 +NaN\n", "field 3: not a finite number: '+NaN'"),
    (b"1 2 1e400\n", "field 3: out of range for float32: '1e400'"),
    (b"1e39 0 0\n", "field 1: out of range for float32: '1e39'"),
    (b"0,-3.5e38,0\n", "field 2: out of range for float32: '-3.5e38'"),
    (b"1e39 x 0\n", "field 1: out of range for float32: '1e39'"),  # first bad wins
    (b"[NaN, 1, 2]\n", "field 1: not a finite number: 'NaN'"),
    (b"[1, -Infinity, 2]\n", "field 2: not a finite number: '-Infinity'"),
    (b"[1, 2, 1e400]\n", "field 3: out of range for float32: '1e400'"),
    (b"[1" + b"0" * 50 + b", 0, 0]\n",
     "field 1: out of range for float32: '1" + "0" * 19 + "...'"),
    (b"[1, 2\n", "invalid JSON array: Expecting ',' delimiter at column 6"),
    (b"  [1 2 3]\n", "invalid JSON array: Expecting ',' delimiter at column 6"),
    (b"[1, 2, 3,]\n", "invalid JSON array: Expecting value at column 10"),
    (b"[1, 2, 3] 4\n", "invalid JSON array: Extra data at column 11"),
    (b"[" * 100_000 + b"\n", "invalid JSON array: nested too deeply"),
    (b"[1, [2], 3]\n", "JSON: expected a flat array of numbers, field 2 is a list"),
    (b'[1, "2", 3]\n', "JSON: expected a flat array of numbers, field 2 is a string"),
    (b"[true, 1, 2]\n", "JSON: expected a flat array of numbers, field 1 is a boolean"),
    (b"[1, 2, null]\n", "JSON: expected a flat array of numbers, field 3 is null"),
    (b"[{}, 1, 2]\n", "JSON: expected a flat array of numbers, field 1 is an object"),
    (b'{"x": [1, 2, 3]}\n', "JSON: expected an array of numbers, got an object"),
    (b' {"x": 1\n', "invalid JSON: Expecting ',' delimiter at column 9"),
    (b"1 2 \xff\n", "not valid UTF-8 (byte 0xff at column 5)"),
    (b"1 2 \xe2\x82", "not valid UTF-8 (byte 0xe2 at column 5)"),  # cut short
    ("\u00e9 ".encode() + b"\xc0\xaf\n", "not valid UTF-8 (byte 0xc0 at column 3)"),
]


@pytest.mark.parametrize("data, message", MALFORMED)
def test_malformed_line_gives_exact_message(data, message):
    assert summary(events(data)) == [("B", 1, message)]


@pytest.mark.parametrize("data, message", [
    (d, m) for d, m in MALFORMED if not m.startswith("not valid UTF-8")])
def test_parse_vector_raises_same_message(data, message):
    with pytest.raises(InputLineError) as info:
        parse_vector(data.decode().rstrip("\n"), 3)
    assert info.value.message == message == str(info.value)


def test_bad_line_does_not_stop_reading():
    data = b"1 2 3\nnope\n\xff\n[1,2]\n4 5 6\n"
    assert summary(events(data)) == [
        ("V", 1, [1, 2, 3]),
        ("B", 2, "field 1: not a number: 'nope'"),
        ("B", 3, "not valid UTF-8 (byte 0xff at column 1)"),
        ("B", 4, "expected 3 numbers, got 2"),
        ("V", 5, [4, 5, 6]),
    ]


def test_format_error():
    assert format_error("<stdin>", 7, "expected 3 numbers, got 2") == (
        "<stdin>:7: expected 3 numbers, got 2")


def test_text_stream_is_a_type_error():
    with pytest.raises(TypeError, match="binary stream"):
        list(read_events(io.StringIO("1 2 3\n"), 3))


# --- good input -------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"1.5 -2 3e2\n",
    b"1.5,-2,3e2\n",
    b"1.5, -2 ,3e2\n",
    b"1.5\t-2\t3e2\n",
    b"1.5 ,\t-2,  3e2\n",
    b"[1.5, -2, 3e2]\n",
    b"[1.5,-2,300]\n",
    b"  1.5 -2 3e2  \r\n",
    b"\t[ 1.5 , -2 , 3E+2 ]\r\n",
    b"+1.5 -2. 300.0",  # no final newline
    b"\xef\xbb\xbf1.5 -2 3e2\n",  # UTF-8 byte order mark on line 1
    "1.5\u00a0-2\u2003300\n".encode(),  # Unicode spaces
])
def test_good_line_variants(data):
    assert summary(events(data)) == [("V", 1, [1.5, -2.0, 300.0])]


def test_exact_float32_values():
    [ev] = events(b"0.1 -0 1e-45\n")
    assert ev.values.tobytes() == np.array([0.1, -0.0, 1e-45], np.float32).tobytes()
    assert np.signbit(ev.values[1])
    [ev] = events(b"3.4028235e38 -3.4028235e+38 1e-50\n")
    f32max = np.finfo(np.float32).max
    assert ev.values.tolist() == [f32max, -f32max, 0.0]


def test_multi_line_stream_with_comments_blanks_and_crlf():
    data = (b"# header comment\r\n"
            b"1 2 3\r\n"
            b"   # indented comment\n"
            b"4,5,6\n"
            b"\n"
            b"  \t \r\n"
            b"[7, 8, 9]\n"
            b"#\n"
            b"\n"
            b"10 11 12")
    assert summary(events(data)) == [
        ("V", 2, [1, 2, 3]),
        ("V", 4, [4, 5, 6]),
        ("R", 5),
        ("R", 6),
        ("V", 7, [7, 8, 9]),
        ("R", 9),
        ("V", 10, [10, 11, 12]),
    ]


@pytest.mark.parametrize("data, expected", [
    (b"", []),
    (b"\n", [("R", 1)]),
    (b"   ", [("R", 1)]),
    (b"# only a comment", []),
    (b"1 2 3\n\n", [("V", 1, [1, 2, 3]), ("R", 2)]),
])
def test_edge_streams(data, expected):
    assert summary(events(data)) == expected


def test_lone_carriage_return_is_not_a_line_break():
    assert summary(events(b"1 2\r3\n", 3)) == [("V", 1, [1, 2, 3])]


# --- long lines -------------------------------------------------------------

def test_max_line_bytes_default():
    assert MAX_LINE_BYTES == 1 << 20


def test_long_line_is_skipped_in_bounded_chunks_and_numbering_continues():
    limit = 16
    data = (b"1 2 3\n"
            + b"9" * 100_000 + b"\n"
            + b"4 5 6\n"
            + b"# " + b"c" * 100_000 + b"\r\n"  # long comment: no event
            + b" " + b"[" * 50_000 + b"\n"
            + b"7 8 9")
    stream = GatedStream(data, max_limit=limit + 2)
    stream.release()
    evs = list(read_events(stream, 3, max_line_bytes=limit))
    assert summary(evs) == [
        ("V", 1, [1, 2, 3]),
        ("B", 2, "line too long (more than 16 bytes)"),
        ("V", 3, [4, 5, 6]),
        ("B", 5, "line too long (more than 16 bytes)"),
        ("V", 6, [7, 8, 9]),
    ]
    assert max(n for _, n in stream.calls) <= limit + 2


@pytest.mark.parametrize("data, expected", [
    (b"0" * 15 + b"1" + b"\n", [("V", 1, [1.0])]),  # exactly 16 bytes
    (b"0" * 15 + b"1" + b"\r\n", [("V", 1, [1.0])]),  # the CR is not counted
    (b"0" * 15 + b"1", [("V", 1, [1.0])]),
    (b"0" * 16 + b"1" + b"\n", [("B", 1, "line too long (more than 16 bytes)")]),
    (b"0" * 16 + b"1" + b"\r\n", [("B", 1, "line too long (more than 16 bytes)")]),
    (b"0" * 16 + b"1", [("B", 1, "line too long (more than 16 bytes)")]),
    (b"0" * 17 + b"1" + b"\r\n2\n", [("B", 1, "line too long (more than 16 bytes)"),
                                     ("V", 2, [2])]),
])
def test_long_line_boundaries(data, expected):
    assert summary(events(data, 1, max_line_bytes=16)) == expected


# --- laziness ----------------------------------------------------------------

def test_reads_nothing_past_the_current_line():
    lines = [b"1 2 3\n", b"bad\n", b"\n", b"# comment\n4 5 6\n", b"[7,8,9]"]
    stream = GatedStream(b"".join(lines))
    gen = read_events(stream, 3)
    expected = [("V", 1, [1, 2, 3]), ("B", 2, "field 1: not a number: 'bad'"),
                ("R", 3), ("V", 5, [4, 5, 6]), ("V", 6, [7, 8, 9])]
    for chunk, want in zip(lines, expected):
        stream.release(len(chunk))
        assert summary([next(gen)]) == [want]
        assert stream.pos == stream.released  # the whole line, nothing more
    with pytest.raises(StopIteration):
        next(gen)


def test_bytesio_position_after_each_event():
    data = b"1 2 3\n\n  x\n[4,5,6]\r\n"
    stream = io.BytesIO(data)
    ends = [6, 7, 11, 20]
    for ev, end in zip(read_events(stream, 3), ends, strict=True):
        assert stream.tell() == end, ev


def test_real_pipe_event_arrives_before_next_line_is_written():
    """A writer that waits for each answer deadlocks a reader that reads ahead."""
    read_fd, write_fd = os.pipe()
    answers = queue.Queue()

    def writer():
        with os.fdopen(write_fd, "wb", buffering=0) as w:
            for line in [b"1 2 3\n", b"oops\n", b"\n", b"4 5 6\n"]:
                w.write(line)
                answers.get(timeout=10)  # wait for the reader's answer

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    got = []
    with os.fdopen(read_fd, "rb") as r:
        for ev in read_events(r, 3):
            got.append(ev)
            answers.put(ev)
    thread.join(timeout=10)
    assert summary(got) == [("V", 1, [1, 2, 3]),
                            ("B", 2, "field 1: not a number: 'oops'"),
                            ("R", 3), ("V", 4, [4, 5, 6])]


# --- property ---------------------------------------------------------------

FINITE_F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def vector_lists(draw):
    size = draw(st.integers(1, 8))
    vecs = draw(st.lists(st.lists(FINITE_F32, min_size=size, max_size=size),
                         max_size=10))
    return size, vecs


def _write(vec, style, sep):
    if style == "json":
        return json.dumps(vec)
    if style == "repr":
        return sep.join(repr(v) for v in vec)
    return sep.join(str(np.float32(v)) for v in vec)  # shortest float32 text


@settings(max_examples=300, deadline=None)
@given(vector_lists(), st.sampled_from(["repr", "str32", "json"]),
       st.sampled_from([" ", ",", ", ", "\t", " , "]),
       st.sampled_from(["\n", "\r\n"]))
def test_roundtrip_of_finite_float32_vectors(sized, style, sep, newline):
    size, vecs = sized
    data = "".join(_write(v, style, sep) + newline for v in vecs).encode()
    evs = events(data, size)
    assert [type(e) for e in evs] == [Vector] * len(vecs)
    for i, (ev, vec) in enumerate(zip(evs, vecs)):
        assert ev.line_no == i + 1
        assert ev.values.tobytes() == np.array(vec, np.float32).tobytes()
