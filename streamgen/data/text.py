"""JSON text in and out, shared by the JSONL files, offline decoding and the CLI.

- `FLOAT32_OVERFLOW`: the magnitude at which a float64 rounds to infinity
  in float32 (the one definition; `streamgen.data.jsonl` and the CLI reader
  refuse such numbers).
- `loads(text)`: `json.loads` whose errors, including nesting too deep for
  the parser (`[[[[...`, which raises `RecursionError` in `json`), are one
  `ValueError` with a short reason.
- `number(value)`, `frames_json(frames)`: a float and an `Out[i]` as
  `streamgen stream` prints them (shared by the CLI, the server and the
  client, so that `stream --url` prints the same bytes).
- `sequences_json`: whole sequences in the output format of
  `streamgen stream` (`frames_json`: floats with 6
  significant digits, `null` for a value that is not finite, no spaces),
  vectorised for `streamgen decode`.

Nothing here imports TensorFlow.
"""

import functools
import json
import math

import numpy as np

__all__ = ["FLOAT32_OVERFLOW", "frames_json", "loads", "number", "sequences_json"]

# Float64 values at or beyond this magnitude round to infinity in float32.
FLOAT32_OVERFLOW = float(2**128 - 2**103)


def number(value):
    """A float as JSON text with 6 significant digits (`null` if not finite)."""
    value = float(value)
    return f"{value:.6g}" if math.isfinite(value) else "null"


def frames_json(frames):
    """`Out[i]` `(L, output_size)` as one compact JSON line, `[]` if empty.

    Example:

    >>> frames_json(np.array([[0.5, -1.0], [1e-7, 2.0]], np.float32))
    '[[0.5,-1],[1e-07,2]]'
    """
    frames = np.asarray(frames)
    if frames.size == 0:
        return "[" + ",".join("[]" for _ in range(len(frames))) + "]"
    values = frames.astype(np.float64).ravel().tolist()
    if not math.isfinite(sum(values)):  # rare: a `null` among them
        return "[" + ",".join(
            "[" + ",".join(number(v) for v in frame) + "]" for frame in frames.tolist()
        ) + "]"
    # The common case in one `%` call (the server formats every step of every
    # stream): "%.6g" is what `number` writes for a finite value.
    return _template(*frames.shape) % tuple(values)


@functools.lru_cache(maxsize=256)
def _template(rows, width):
    """`"[[%.6g,%.6g],[%.6g,%.6g]]"` for `rows` frames of `width` values."""
    frame = "[" + ",".join(["%.6g"] * width) + "]"
    return "[" + ",".join([frame] * rows) + "]"


def loads(text, **hooks):
    """Parses one JSON document; every failure is a `ValueError`.

    The one JSON reader of the library: JSON Lines records, the CLI's
    input lines and the server's protocol (which adds its `hooks`) use it.

    Args:
        text: str, the document.
        **hooks: `json.loads` hooks (`parse_int=`, `parse_constant=`, ...);
            an error a hook raises propagates as it is.

    Returns:
        The decoded value.

    Raises:
        ValueError: `"bad JSON: <reason> at column <c>"`, or
            `"bad JSON: nested too deeply"` for nesting beyond the parser's
            recursion limit.
    """
    try:
        return json.loads(text, **hooks)
    except json.JSONDecodeError as error:
        raise ValueError(f"bad JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise ValueError("bad JSON: nested too deeply") from None


def sequences_json(frames, lengths, steps=None):
    """Each sequence's `Out` as JSON text, each `Out[t]` as `frames_json` writes it.

    Vectorised over a batch: the text of every sequence is one `%`-format
    template (cached per length) filled with all its values at once.

    Args:
        frames: float array `(B, T, max_steps, output_size)`, padded frames.
        lengths: int array `(B, T)`, frames kept per outer step.
        steps: optional int array `(B,)`, the real outer steps of each
            sequence (`T` for all when `None`); padded steps are left out.

    Returns:
        A list of `B` strings `"[Out[0],Out[1],...]"`.

    Example:

    >>> sequences_json(np.ones((1, 2, 3, 1)), np.array([[1, 0]]))
    ['[[[1]],[]]']
    """
    frames = np.asarray(frames)
    lengths = np.asarray(lengths)
    batch, time = lengths.shape
    width = frames.shape[3]
    steps = np.full(batch, time) if steps is None else np.asarray(steps)
    lengths = np.where(np.arange(time)[None, :] < steps[:, None], lengths, 0)  # (B, T)
    kept = frames[np.arange(frames.shape[2])[None, None, :] < lengths[..., None]]  # (F, O)
    values = kept.astype(np.float64)
    if not np.isfinite(values).all():  # rare: `null`s, one value at a time
        texts = ["[" + ",".join(number(v) for v in row) + "]" for row in values.tolist()]
        return _join(texts, lengths, steps)
    frame = "[" + ",".join(["%.6g"] * width) + "]"
    templates = {}  # length -> "[[%.6g,%.6g],...]"
    out, start = [], 0
    flat = values.reshape(-1).tolist()
    for row, count in zip(lengths.tolist(), steps.tolist()):
        parts = []
        for length in row[:count]:
            template = templates.get(length)
            if template is None:
                template = templates[length] = "[" + ",".join([frame] * length) + "]"
            parts.append(template)
        size = sum(row[:count]) * width
        out.append(("[" + ",".join(parts) + "]") % tuple(flat[start:start + size]))
        start += size
    return out


def _join(texts, lengths, steps):
    """Sequences' text from the text of each frame, in order."""
    out, start = [], 0
    for row, count in zip(lengths.tolist(), steps.tolist()):
        parts = []
        for length in row[:count]:
            parts.append("[" + ",".join(texts[start:start + length]) + "]")
            start += length
        out.append("[" + ",".join(parts) + "]")
    return out
