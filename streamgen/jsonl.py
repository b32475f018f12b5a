"""JSON Lines files of training data: one sequence per line.

    {"x": [[0.1, 0.5, -0.3], ...], "y": [[[0.2, 0.9], [0.4, 0.8]], [], ...]}

`x` is the sequence's `T` input vectors, `y[t]` the list of frames of
`Out[t]` (possibly empty), and `len(y) == len(x)`. In memory, the same
`inputs` / `targets` as `streamgen.data` (see there).
"""

import json
import os

import numpy as np

from streamgen.data import _check_max_steps, _check_pair, _flatten_inputs, _flatten_targets

__all__ = ["load_jsonl", "save_jsonl"]


# Float64 values at or beyond this magnitude round to infinity in float32.
_F32_OVERFLOW = float(2**128 - 2**103)


def _check_record(rec, line_no, max_steps, widths):
    """Validates one decoded JSON record; returns `(x, frames_per_step)`."""

    def rows(value, name, key, what):
        if not isinstance(value, list):
            raise ValueError(
                f"field '{name}': expected a list of {what}, received {type(value).__name__}"
            )
        out = []
        for k, row in enumerate(value):
            where = f"{name}[{k}]"
            if not isinstance(row, list):
                raise ValueError(
                    f"field '{where}': expected a list of numbers, received {type(row).__name__}"
                )
            for c, v in enumerate(row):
                if type(v) not in (int, float):
                    raise ValueError(
                        f"field '{where}[{c}]': expected a number, received {json.dumps(v)}"
                    )
                if not abs(v) < _F32_OVERFLOW:
                    raise ValueError(
                        f"field '{where}[{c}]': not a finite float32 number ({str(v):.24})"
                    )
            width, source = widths[key]
            if not row:
                raise ValueError(f"field '{where}': an empty vector (width 0)")
            if width is None:
                widths[key] = (len(row), f"as in field '{where}' on line {line_no}")
            elif len(row) != width:
                raise ValueError(f"field '{where}': width {len(row)}, expected {width} ({source})")
            out.append(row)
        return out

    if not isinstance(rec, dict):
        raise ValueError(
            f"expected a JSON object with keys 'x' and 'y', received {type(rec).__name__}"
        )
    for key in ("x", "y"):
        if key not in rec:
            raise ValueError(f"missing key '{key}'")
    x = rows(rec["x"], "x", "x", "input vectors")
    if not x:
        raise ValueError("field 'x': no outer steps (T = 0); every sequence needs T >= 1")
    y = rec["y"]
    if not isinstance(y, list):
        raise ValueError(f"field 'y': expected a list of frame lists, received {type(y).__name__}")
    if len(y) != len(x):
        raise ValueError(f"field 'y': {len(y)} outer steps, but 'x' has {len(x)}")
    outs = []
    for t, out in enumerate(y):
        frames = rows(out, f"y[{t}]", "y", "frames")
        if max_steps is not None and len(frames) > max_steps:
            raise ValueError(
                f"field 'y[{t}]': {len(frames)} frames, more than max_steps={max_steps}"
            )
        outs.append(frames)
    return x, outs


def load_jsonl(path, *, max_steps=None, input_size=None, output_size=None):
    """Reads sequences from a JSON Lines file.

    One sequence per line: `{"x": [[...], ...], "y": [[[...], ...], ...]}`
    where `x` holds `T >= 1` input vectors and `y[t]` the frames of
    `Out[t]` (possibly `[]`), `len(y) == len(x)`. Blank lines are skipped.
    Widths must agree on every line (the first record fixes them unless
    given). Extra keys are ignored.

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
    """
    if max_steps is not None:
        max_steps = _check_max_steps(max_steps)
    path = os.fspath(path)
    widths = {
        "x": (input_size, f"input_size={input_size}"),
        "y": (output_size, f"output_size={output_size}"),
    }
    inputs, targets = [], []
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
                if line_no == 1:
                    text = text.lstrip("\ufeff")
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text.rstrip("\r\n"))
                except json.JSONDecodeError as e:
                    raise ValueError(f"bad JSON: {e.msg} at column {e.colno}") from None
                x, outs = _check_record(rec, line_no, max_steps, widths)
            except ValueError as e:
                raise ValueError(f"{path}:{line_no}: {e}") from None
            inputs.append(np.array(x, np.float32))
            targets.append(outs)
    if not inputs:
        raise ValueError(f"{path}: no sequences")
    width = widths["y"][0] or 0  # 0 only if no line has a frame.
    targets = [
        [np.array(out, np.float32).reshape(len(out), width) for out in outs] for outs in targets
    ]
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
    T_x, x = _flatten_inputs(inputs, dtype=None)
    T_y, L, f = _flatten_targets(targets, dtype=None, need_width=False)
    _check_pair(T_x, T_y)
    xs = [",".join(r) for r in x.astype(str)]
    fs = [",".join(r) for r in f.astype(str)]
    step, frame = 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        for T in T_x:
            ys = []
            for n in L[step : step + T]:
                ys.append("[" + ",".join("[" + r + "]" for r in fs[frame : frame + n]) + "]")
                frame += n
            xl = ",".join("[" + r + "]" for r in xs[step : step + T])
            fh.write('{"x":[' + xl + '],"y":[' + ",".join(ys) + "]}\n")
            step += T
    return path
