"""Reads input vectors, one per line, from a binary stream.

Each physical line (ended by `\\n`; a `\\r` before it is dropped) gives at
most one event: a `Vector` for numbers separated by commas and/or whitespace
(`1 2 3`, `1, 2,3`) or a JSON array (`[1, 2, 3]`, any line whose first
non-space character is `[`; one that starts with `{` is read as JSON too, to
report an object as such); a `Reset` for a line that is empty after
stripping whitespace; nothing for a comment (first non-space character `#`);
and a `BadLine` for anything else. Bad input never raises.

The stream is read lazily, one `readline(limit)` call per line, so each
event is yielded before a byte of the next line is requested. A line longer
than `max_line_bytes` (not counting its line ending) is skipped in bounded
chunks and reported as a `BadLine` (silently, if it is a comment).

Fields are checked left to right and the first bad one is reported; the
count is checked only when every field is a number. Columns in messages are
1-based characters. A UTF-8 byte order mark at the start of line 1 is
ignored. Values too small for float32 become 0 or a subnormal.
"""

import dataclasses
import json
import math
import re
from typing import BinaryIO, Iterator, Union

import numpy as np

from streamgen.data.text import FLOAT32_OVERFLOW

__all__ = ["MAX_LINE_BYTES", "BadLine", "InputLineError", "Reset", "Vector",
           "format_error", "parse_vector", "read_events"]

MAX_LINE_BYTES = 1 << 20
_DISCARD_CHUNK = 1 << 16
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SEPARATOR = re.compile(r"\s*,\s*|\s+")
_JSON_KINDS = ((bool, "a boolean"), (str, "a string"), (list, "a list"),
               (dict, "an object"), (type(None), "null"))


@dataclasses.dataclass(frozen=True, eq=False)
class Vector:
    """An input vector: float32 `values` of shape `(input_size,)`."""

    line_no: int
    values: np.ndarray


@dataclasses.dataclass(frozen=True)
class Reset:
    """A blank line: the end of a sequence."""

    line_no: int


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A line that could not be read; `message` has no source/line prefix."""

    line_no: int
    message: str


Event = Union[Vector, Reset, BadLine]


class InputLineError(Exception):
    """Raised by `parse_vector` for malformed text; `.message` says why."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class _Token:
    """A JSON number or constant, kept as its source text."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


def format_error(source: str, line_no: int, message: str) -> str:
    """Formats a message as `"<source>:<line_no>: <message>"`.

    Args:
        source: Name of the input, e.g. `"<stdin>"` or a file name.
        line_no: 1-based line number.
        message: Text of the error, e.g. `BadLine.message`.

    Returns:
        The one-line error string.
    """
    return f"{source}:{line_no}: {message}"


def _quote(token):
    return repr(token[:20] + "..." if len(token) > 20 else token)


def _number(token, field):
    """Converts one field's text to a float that fits float32, or raises."""
    if _NUMBER.fullmatch(token):
        value = float(token)
        if abs(value) < FLOAT32_OVERFLOW:
            return value
        raise InputLineError(
            f"field {field}: out of range for float32: {_quote(token)}")
    try:
        non_finite = not math.isfinite(float(token))
    except ValueError:
        non_finite = False
    kind = "not a finite number" if non_finite else "not a number"
    raise InputLineError(f"field {field}: {kind}: {_quote(token)}")


def _json_kind(value):
    return next(kind for t, kind in _JSON_KINDS if isinstance(value, t))


def _json_what(text):
    return "JSON array" if text.startswith("[") else "JSON"


def _json_fields(text, lead):
    try:
        items = json.loads(text, parse_float=_Token, parse_int=_Token,
                           parse_constant=_Token)
    except json.JSONDecodeError as e:
        raise InputLineError(
            f"invalid {_json_what(text)}: {e.msg} at column {lead + e.pos + 1}")
    except RecursionError:
        raise InputLineError(f"invalid {_json_what(text)}: nested too deeply")
    if not isinstance(items, list):
        raise InputLineError(
            f"JSON: expected an array of numbers, got {_json_kind(items)}")
    for field, item in enumerate(items, 1):
        if not isinstance(item, _Token):
            raise InputLineError("JSON: expected a flat array of numbers, "
                                 f"field {field} is {_json_kind(item)}")
    return [item.text for item in items]


def parse_vector(text: str, input_size: int) -> np.ndarray:
    """Parses one line of text into a float32 vector.

    Args:
        text: The line, without its line ending. Surrounding whitespace is
            ignored. Either numbers separated by commas and/or whitespace,
            or (if it starts with `[`) a JSON array of numbers.
        input_size: The number of values the line must hold.

    Returns:
        A float32 array of shape `(input_size,)`.

    Raises:
        InputLineError: If a field is not a finite number in float32 range
            (the first such field is reported), the JSON is malformed or not
            a flat array, or the count is not `input_size`.
    """
    stripped = text.strip()
    if stripped.startswith(("[", "{")):  # `{`: a JSON object, reported as such
        tokens = _json_fields(stripped, len(text) - len(text.lstrip()))
    else:
        tokens = _SEPARATOR.split(stripped) if stripped else []
    values = [_number(token, field) for field, token in enumerate(tokens, 1)]
    if len(values) != input_size:
        raise InputLineError(
            f"expected {input_size} numbers, got {len(values)}")
    return np.array(values, dtype=np.float32)


def _skip_rest(stream, chunk_size):
    """Reads and drops the rest of the current line, `chunk_size` at a time."""
    chunk = b"x"
    while chunk and not chunk.endswith(b"\n"):
        chunk = stream.readline(chunk_size)


def read_events(stream: BinaryIO, input_size: int, *,
                max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Event]:
    """Yields one event per non-comment line of a binary stream.

    Args:
        stream: A binary file object with `readline(limit)`, such as
            `sys.stdin.buffer`. Nothing past the current line is read before
            its event is yielded.
        input_size: The number of values each vector line must hold.
        max_line_bytes: Longest accepted line, in bytes, not counting its
            line ending. Longer lines are discarded in bounded chunks.

    Returns:
        An iterator of `Vector`, `Reset` and `BadLine` events, with 1-based
        physical line numbers.

    Raises:
        TypeError: If `stream` yields `str` rather than `bytes`.
    """
    chunk_size = min(_DISCARD_CHUNK, max_line_bytes + 2)
    line_no = 0
    while True:
        raw = stream.readline(max_line_bytes + 2)
        if not isinstance(raw, bytes):
            raise TypeError("read_events needs a binary stream, got "
                            f"{type(raw).__name__} from readline()")
        if not raw:
            return
        line_no += 1
        ended = raw.endswith(b"\n")
        body = raw[:-1] if ended else raw
        body = body[:-1] if body.endswith(b"\r") else body
        if len(body) > max_line_bytes:
            if not ended:
                _skip_rest(stream, chunk_size)
            if not body.lstrip().startswith(b"#"):
                yield BadLine(line_no, "line too long (more than "
                                       f"{max_line_bytes} bytes)")
            continue
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            column = len(body[:e.start].decode("utf-8")) + 1
            yield BadLine(line_no, f"not valid UTF-8 (byte 0x{body[e.start]:02x}"
                                   f" at column {column})")
            continue
        if line_no == 1 and text.startswith("\ufeff"):
            text = " " + text[1:]  # keeps columns in messages right
        stripped = text.strip()
        if not stripped:
            yield Reset(line_no)
        elif not stripped.startswith("#"):
            try:
                event = Vector(line_no, parse_vector(text, input_size))
            except InputLineError as e:
                event = BadLine(line_no, e.message)
            yield event
