"""JSON text in and out, shared by the JSONL files, offline decoding and the CLI.

- `FLOAT32_OVERFLOW`: the magnitude at which a float64 rounds to infinity
  in float32 (the one definition; `streamgen.jsonl` and the CLI reader
  refuse such numbers).
- `loads(text)`: `json.loads` whose errors, including nesting too deep for
  the parser (`[[[[...`, which raises `RecursionError` in `json`), are one
  `ValueError` with a short reason.
- `sequences_json`: whole sequences in the output format of
  `streamgen stream` (`streamgen.wire.frames_json`: floats with 6
  significant digits, `null` for a value that is not finite, no spaces),
  vectorised for `streamgen decode`.

Nothing here imports TensorFlow.
"""

import json

import numpy as np

from streamgen import wire

__all__ = ["FLOAT32_OVERFLOW", "loads", "sequences_json"]

# Float64 values at or beyond this magnitude round to infinity in float32.
FLOAT32_OVERFLOW = float(2**128 - 2**103)


def loads(text):
    """Parses one JSON document; every failure is a `ValueError`.

    Args:
        text: str, the document.

    Returns:
        The decoded value.

    Raises:
        ValueError: `"bad JSON: <reason> at column <c>"`, or
            `"bad JSON: nested too deeply"` for nesting beyond the parser's
            recursion limit.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"bad JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise ValueError("bad JSON: nested too deeply") from None


def sequences_json(frames, lengths, steps=None):
    """Each sequence's `Out` as JSON text, each `Out[t]` as `wire.frames_json` writes it.

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
        texts = ["[" + ",".join(wire.number(v) for v in row) + "]" for row in values.tolist()]
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
