"""JSON Lines files of sequences: one sequence per line.

    {"x": [[0.1, 0.5, -0.3], ...], "y": [[[0.2, 0.9], [0.4, 0.8]], [], ...]}

`x` is the sequence's `T` input vectors, `y[t]` the list of frames of
`Out[t]` (possibly empty), and `len(y) == len(x)`. In memory, the same
`inputs` / `targets` as `streamgen.data.dataset` (see there).

`load_jsonl` reads a whole file into memory; `read_records` streams records
from many files (globs allowed) one at a time, with the same checks and the
same `"{path}:{line}: ..."` errors: `sg.jsonl_dataset` trains on it and
`sg.decode_jsonl` decodes with it. Nothing here imports TensorFlow.
"""

import contextlib
import glob
import gzip
import json
import os
import sys
import zlib
from typing import NamedTuple, Optional

import numpy as np

from streamgen import checks
from streamgen.data import ragged
from streamgen.data.text import FLOAT32_OVERFLOW, loads

__all__ = ["ReadError", "Record", "RecordError", "Widths", "expand_paths", "is_plain",
           "line_ranges", "load_jsonl", "open_binary", "peek_widths", "read_range", "read_records", "save_jsonl"]

_GLOB_CHARACTERS = "*?["


class Record(NamedTuple):
    """One checked sequence of a JSONL file.

    Attributes:
        path: the file it came from.
        line_no: its 1-based line number.
        inputs: float32 `(T, input_size)`.
        lengths: int32 `(T,)`, frames per outer step (`None` when targets
            were not read).
        frames: float32 `(F, output_size)`, every frame of `y` in order,
            `F = lengths.sum()` (`None` when targets were not read).
        data: the decoded JSON object (for extra keys such as `"id"`).
    """

    path: str
    line_no: int
    inputs: np.ndarray
    lengths: Optional[np.ndarray]
    frames: Optional[np.ndarray]
    data: dict


class RecordError(NamedTuple):
    """A malformed line: `str(error)` is `"{path}:{line_no}: {message}"`."""

    path: str
    line_no: int
    message: str

    def __str__(self):
        return f"{self.path}:{self.line_no}: {self.message}"


# ---------------------------------------------------------------------- #
# Files.
# ---------------------------------------------------------------------- #
def expand_paths(paths, stdin=False):
    """File names from paths and glob patterns, in the order given.

    Args:
        paths: a str or path-like, or a list of them; a name with `*`, `?`
            or `[` is a glob pattern and gives its matches, sorted.
        stdin: accept `"-"` (standard input, read once), at most once.

    Returns:
        A list of file names (str).

    Raises:
        FileNotFoundError: a file that does not exist, or a pattern that
            matches no file.
        ValueError: no paths at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for path in paths:
        path = os.fspath(path)
        if path == "-" and stdin:
            if "-" in files:
                raise ValueError("Received '-' (standard input) twice; it can be read "
                                 "only once.")
            files.append(path)
            continue
        if any(c in path for c in _GLOB_CHARACTERS) and not os.path.exists(path):
            matches = sorted(m for m in glob.glob(path) if not os.path.isdir(m))
            if not matches:
                raise FileNotFoundError(f"{path}: no file matches this pattern")
            files.extend(matches)
        elif not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        elif os.path.isdir(path):
            raise FileNotFoundError(f"{path}: a folder, not a file")
        else:
            files.append(path)
    if not files:
        raise ValueError("Received an invalid value for argument `paths`, expected at "
                         "least one file, got [].")
    return files


def is_plain(path):
    """True for a regular, uncompressed file (one that can be cut into byte ranges)."""
    if path == "-" or path.lower().endswith(".gz"):
        return False
    try:
        import stat

        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def open_binary(path):
    """Opens a JSONL file for reading bytes: `"-"` is standard input, `.gz` is gunzipped.

    Errors while opening or reading are `OSError`s that name the path
    (`"{path}: cannot read: ..."`); a corrupt or truncated `.gz` too.
    """
    try:
        if path == "-":
            yield _Named(sys.stdin.buffer, "<stdin>")
            return
        raw = open(path, "rb")
    except OSError as error:
        raise ReadError(error.errno, f"{path}: cannot read: {error.strerror or error}") \
            from None
    try:
        with raw:
            if path.lower().endswith(".gz"):
                with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                    yield _Named(unzipped, path)
            else:
                yield _Named(raw, path)
    except (OSError, EOFError, zlib.error) as error:
        if isinstance(error, ReadError):
            raise
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise ReadError(getattr(error, "errno", None),
                        f"{path}: cannot read: {reason}") from None


class ReadError(OSError):
    """An input file that cannot be read; `str` is `"{path}: cannot read: ..."`."""

    def __str__(self):
        return self.strerror


class _Named:
    """A binary file whose read errors name its path (iterates over lines)."""

    def __init__(self, fh, path):
        self.fh, self.path = fh, path

    def seek(self, offset):
        if offset:
            self.fh.seek(offset)

    def _fail(self, error):
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        return ReadError(getattr(error, "errno", None), f"{self.path}: cannot read: {reason}")

    def __iter__(self):
        while True:
            try:
                line = self.fh.readline()
            except (OSError, EOFError, zlib.error) as error:
                raise self._fail(error) from None
            if not line:
                return
            yield line

    def read(self, size=-1):
        try:
            return self.fh.read(size)
        except (OSError, EOFError, zlib.error) as error:
            raise self._fail(error) from None


def _lines(path, start=0, end=None, first_line=1):
    """`(line_no, text)` of each non-blank line; `(line_no, ValueError)` if not UTF-8.

    `start`/`end`: a byte range of whole lines (`start` at a line start),
    whose first line is line `first_line` (offsets into the uncompressed
    text of a `.gz`). A FIFO or `"-"` (standard input) is read once, from
    its start.
    """
    with open_binary(path) as fh:
        fh.seek(start)
        lines = iter(fh) if end is None else _upto(fh, end - start)
        for line_no, raw in enumerate(lines, first_line):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, ValueError(f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            if line_no == 1:
                text = text.lstrip("\ufeff")
            if text.strip():
                yield line_no, text


def _upto(fh, size):
    """The lines of `fh` within the next `size` bytes."""
    for raw in fh:
        if size <= 0:
            return
        size -= len(raw)
        yield raw


def line_ranges(path, lines_per_range):
    """Cuts a file into byte ranges of `lines_per_range` lines each.

    Returns:
        A list of `(start, end, first_line)`: byte offsets (`end`
        exclusive) and the 1-based number of the range's first line.
    """
    ranges, start, first, count, offset = [], 0, 1, 0, 0
    with open_binary(path) as fh:
        for raw in fh:
            offset += len(raw)
            count += 1
            if count == lines_per_range:
                ranges.append((start, offset, first))
                start, first, count = offset, first + count, 0
    if count or not ranges:
        ranges.append((start, offset, first))
    return ranges


# ---------------------------------------------------------------------- #
# Records.
# ---------------------------------------------------------------------- #
class Widths:
    """The widths every record of a read must have, and where each was fixed.

    `size["x"]` / `size["y"]`: `input_size` / `output_size`, or None until
    a record fixes them (see `peek_widths`).
    """

    def __init__(self, input_size=None, output_size=None):
        self.size = {"x": input_size, "y": output_size}
        self.source = {"x": f"input_size={input_size}", "y": f"output_size={output_size}"}
        self.path = None

    def check(self, key, width, where, path, line_no):
        if self.size[key] is None:
            self.size[key] = width
            self.source[key] = (f"as in field '{where}' on line {line_no}", path)
        elif width != self.size[key]:
            source = self.source[key]
            if isinstance(source, tuple):  # fixed by a record
                text, fixed_in = source
                source = text if fixed_in == path else f"{text} of {fixed_in}"
            raise ValueError(f"field '{where}': width {width}, expected {self.size[key]} "
                             f"({source})")


def _kind(value):
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return json.dumps(value)[:40]


def _rows_slow(value, name, what):
    """A list of rows of numbers checked one value at a time; says which is wrong."""
    if not isinstance(value, list):
        raise ValueError(f"field '{name}': expected a list of {what}, got {type(value).__name__}")
    for k, row in enumerate(value):
        where = f"{name}[{k}]"
        if not isinstance(row, list):
            raise ValueError(
                f"field '{where}': expected a list of numbers, got {type(row).__name__}")
        for c, v in enumerate(row):
            if type(v) not in (int, float):
                raise ValueError(f"field '{where}[{c}]': expected a number, got {_kind(v)}")
            if not abs(v) < FLOAT32_OVERFLOW:
                raise ValueError(
                    f"field '{where}[{c}]': not a finite float32 number ({str(v):.24})")
        if not row:
            raise ValueError(f"field '{where}': an empty vector (width 0)")


def _rows(value, name, what, key, widths, path, line_no, fast, first=None):
    """`value` (a JSON list of rows) as float32 `(R, width)`, or the first error.

    `fast`: the line holds no `true`/`false`, so numpy cannot have turned a
    boolean into a number and a clean numeric array needs no per-value
    check. `first`: the field name of row 0 (default `name[0]`).
    """
    array = None
    if fast and isinstance(value, list) and value:
        try:
            array = np.array(value)
        except (ValueError, TypeError, OverflowError):
            array = None
        if array is not None and not (
                array.ndim == 2 and array.shape[1] > 0 and array.dtype.kind in "if"
                and (array.dtype.kind == "i" or np.all(np.abs(array) < FLOAT32_OVERFLOW))):
            array = None
    if array is None:
        _rows_slow(value, name, what)  # raises, unless only the width is wrong
        if not value:
            return np.zeros((0, widths.size[key] or 0), np.float32)
        lengths = [len(row) for row in value]
        for k, length in enumerate(lengths):
            widths.check(key, length, f"{name}[{k}]", path, line_no)
        array = np.array(value)
    widths.check(key, array.shape[1], first or f"{name}[0]", path, line_no)
    with np.errstate(over="ignore"):
        return array.astype(np.float32)


def check_record(record, path, line_no, widths, max_steps=None, targets=True, fast=True):
    """Validates one decoded JSON record; returns `(inputs, lengths, frames)`.

    Raises:
        ValueError: without the `path:line` prefix, naming the field.
    """
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object with keys 'x' and 'y', got "
                         f"{type(record).__name__}")
    for key in ("x", "y") if targets else ("x",):
        if key not in record:
            raise ValueError(f"missing key '{key}'")
    x = record["x"]
    inputs = _rows(x, "x", "input vectors", "x", widths, path, line_no, fast)
    if not len(inputs):
        raise ValueError("field 'x': no outer steps (T = 0); every sequence needs T >= 1")
    if not targets:
        return inputs, None, None
    y = record["y"]
    if not isinstance(y, list):
        raise ValueError(f"field 'y': expected a list of frame lists, got {type(y).__name__}")
    if len(y) != len(inputs):
        raise ValueError(f"field 'y': {len(y)} outer steps, but 'x' has {len(inputs)}")
    frames = None
    if fast and all(type(out) is list for out in y):  # all steps at once
        lengths = np.fromiter(map(len, y), np.int32, len(y))
        every = [frame for out in y for frame in out]
        if every:
            first = f"y[{int(np.argmax(lengths > 0))}][0]"
            try:
                frames = _rows(every, "y", "frames", "y", widths, path, line_no, fast, first)
            except ValueError:
                frames = None  # found again below, with its step
        else:
            frames = np.zeros((0, widths.size["y"] or 0), np.float32)
    if frames is None:
        parts = [_rows(out, f"y[{t}]", "frames", "y", widths, path, line_no, fast=False)
                 for t, out in enumerate(y)]
        lengths = np.fromiter(map(len, parts), np.int32, len(parts))
        nonempty = [part for part in parts if len(part)]
        frames = np.concatenate(nonempty) if nonempty else np.zeros(
            (0, widths.size["y"] or 0), np.float32)
    if max_steps is not None and lengths.size and lengths.max() > max_steps:
        t = int(np.argmax(lengths > max_steps))
        raise ValueError(f"field 'y[{t}]': {lengths[t]} frames, more than max_steps={max_steps}")
    return inputs, lengths, frames


def peek_widths(paths, *, max_steps=None, input_size=None, output_size=None):
    """Reads records until both widths are known; returns the `Widths`.

    Reads only as far as needed (to the first record with a frame). A
    malformed record on the way raises as in `read_records`.

    Raises:
        ValueError: no record at all (`"{path}: no sequences"`), or no frame
            in any record and no `output_size` (pass it then).
    """
    widths = Widths(input_size, output_size)
    files = expand_paths(paths)
    seen = False
    for path in files:
        for _ in read_range(path, widths=widths, max_steps=max_steps):
            seen = True
            if widths.size["y"] is not None:
                return widths
    if not seen:
        raise ValueError(f"{', '.join(files)}: no sequences")
    raise ValueError(f"{', '.join(files)}: no frames at all, so output_size is unknown")


def read_records(paths, *, targets=True, max_steps=None, input_size=None, output_size=None,
                 on_error="raise"):
    """Streams the records of JSONL files, checked, one at a time.

    Reads one line at a time (a file is never loaded whole). Blank lines
    are skipped; a UTF-8 byte order mark on line 1 is ignored. The first
    record fixes the widths unless given; every file must agree.

    Args:
        paths: a file, a glob pattern, or a list of them (see
            `expand_paths`); files are read in that order.
        targets: read and check `"y"`; when False, `"y"` is optional and
            ignored (decoding).
        max_steps: int or None; when given, longer `Out[t]` are an error.
        input_size: int or None; the width of every `x[t]` when given.
        output_size: int or None; the width of every frame when given.
        on_error: `"raise"` (a `ValueError`), or `"yield"`: a `RecordError`
            takes the bad record's place and reading goes on.

    Yields:
        `Record`s (and `RecordError`s with `on_error="yield"`), in file and
        line order.

    Raises:
        FileNotFoundError: see `expand_paths`.
        ValueError: a malformed record, `"{path}:{line}: {what}"`, e.g.
            `train.jsonl:7: field 'y[2]': 12 frames, more than max_steps=9`.
    """
    if max_steps is not None:
        max_steps = checks.check_max_steps(max_steps)
    if on_error not in ("raise", "yield"):
        raise checks.invalid("on_error", "'raise' or 'yield'", on_error)
    widths = Widths(input_size, output_size)
    for path in expand_paths(paths, stdin=True):
        yield from read_range(path, widths=widths, targets=targets, max_steps=max_steps,
                              on_error=on_error)


def read_range(path, start=0, end=None, first_line=1, *, widths=None, targets=True,
               max_steps=None, input_size=None, output_size=None, on_error="raise"):
    """`read_records` for one file, or a byte range of it (see `line_ranges`).

    `widths`: the widths fixed so far (shared by the files of one read).
    """
    widths = widths or Widths(input_size, output_size)
    for line_no, text in _lines(path, start, end, first_line):
        try:
            if isinstance(text, ValueError):
                raise text
            record = loads(text.rstrip("\r\n"))
            parts = check_record(record, path, line_no, widths, max_steps, targets,
                                 fast="true" not in text and "false" not in text)
        except ValueError as error:
            if on_error == "raise":
                raise ValueError(f"{path}:{line_no}: {error}") from None
            yield RecordError(path, line_no, str(error))
            continue
        yield Record(path, line_no, *parts, record)


# ---------------------------------------------------------------------- #
# Whole files.
# ---------------------------------------------------------------------- #
def load_jsonl(path, *, max_steps=None, input_size=None, output_size=None):
    """Reads sequences from a JSON Lines file.

    One sequence per line: `{"x": [[...], ...], "y": [[[...], ...], ...]}`
    where `x` holds `T >= 1` input vectors and `y[t]` the frames of
    `Out[t]` (possibly `[]`), `len(y) == len(x)`. Blank lines are skipped.
    Widths must agree on every line (the first record fixes them unless
    given). Extra keys are ignored. For files larger than memory, see
    `read_records` and `sg.jsonl_dataset`.

    Args:
        path: str or path-like.
        max_steps: int or None; when given, longer `Out[t]` are an error.
        input_size: int or None; the width of every `x[t]` when given.
        output_size: int or None; the width of every frame when given.

    Returns:
        `(inputs, targets)`: a list of float32 arrays `(T_n, input_size)` and
        a list of lists of float32 arrays `(L, output_size)`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed record; the message starts with
            `"{path}:{line}: "` and names the field, e.g.
            `train.jsonl:7: field 'y[2]': 12 frames, more than max_steps=9`.
            An empty file gives `"{path}: no sequences"`.

    Example:

    >>> inputs, targets = sg.load_jsonl("samples/valid.jsonl")
    >>> inputs[0].shape, targets[0][1].shape
    ((16, 3), (4, 2))
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    records = list(read_records([path], max_steps=max_steps, input_size=input_size,
                                output_size=output_size))
    if not records:
        raise ValueError(f"{path}: no sequences")
    width = max((r.frames.shape[1] for r in records), default=0)
    inputs = [r.inputs for r in records]
    targets = [[out.reshape(len(out), width) for out in ragged.split(r.frames, r.lengths)]
               for r in records]
    return inputs, targets


def save_jsonl(path, inputs, targets):
    """Writes sequences to a JSON Lines file that `load_jsonl` reads back.

    Numbers are written with the shortest text that round-trips in their
    own dtype, so float32 data (what `load_jsonl` returns) come back bit
    for bit.

    Args:
        path: str or path-like.
        inputs: a list of N arrays `(T_n, input_size)` or one array
            `(N, T, input_size)`.
        targets: a list of N lists of `T_n` arrays `(L, output_size)`, or a
            `tf.RaggedTensor` `(N, T, None, output_size)`.

    Returns:
        `path`.

    Raises:
        ValueError: as `make_dataset` (no limit on frames per step).
    """
    flat_x = ragged.flatten_inputs(inputs, dtype=None)
    flat_y = ragged.flatten_targets(targets, dtype=None, need_width=False)
    ragged.check_pair(flat_x, flat_y)
    rows = ["[" + ",".join(r) + "]" for r in flat_x.rows.astype(str)]
    frames = ["[" + ",".join(r) + "]" for r in flat_y.frames.astype(str)]
    step, frame = 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        for count in flat_x.steps:
            outs = []
            for length in flat_y.lengths[step:step + count]:
                outs.append("[" + ",".join(frames[frame:frame + length]) + "]")
                frame += length
            fh.write('{"x":[' + ",".join(rows[step:step + count]) + '],"y":['
                     + ",".join(outs) + "]}\n")
            step += count
    return path
