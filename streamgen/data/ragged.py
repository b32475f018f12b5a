"""Ragged sequences in flat form: validate and flatten inputs and targets.

A data set is `N` sequences. Sequence `n` has `T_n >= 1` outer steps; at
outer step `t` it has an input vector (`input_size`) and a target `Out` of
`L = 0..max_steps` frames (`output_size` each). In flat form every ragged
level is one array plus the counts that cut it:

| field | shape | what |
| --- | --- | --- |
| `steps` | `(N,)` int64 | outer steps per sequence (`T_n`) |
| `rows` | `(S, input_size)` | one input vector per outer step, `S = steps.sum()` |
| `lengths` | `(S,)` int64 | frames per outer step (`L`) |
| `frames` | `(F, output_size)` | every frame, `F = lengths.sum()` |

`flatten_inputs` and `flatten_targets` accept what the public API accepts
(lists of arrays, one dense array, a `tf.RaggedTensor`) and say exactly
where a value is wrong (`targets[3][5] has 12 frames, more than
max_steps=9`). They are shared by `streamgen.data.dataset`, `streamgen.data.jsonl` and
`streamgen.losses`.

Nothing here imports TensorFlow: tensors are read through their public
methods (`row_lengths()`, `values`, `numpy()`).
"""

import itertools
from typing import NamedTuple

import numpy as np

from streamgen import checks

__all__ = [
    "FlatInputs",
    "FlatTargets",
    "check_lengths",
    "check_pair",
    "flatten_inputs",
    "flatten_targets",
    "locate",
    "offsets",
    "split",
    "step_frames",
]


class FlatInputs(NamedTuple):
    """Inputs in flat form: `steps` int64 `(N,)`, `rows` `(S, input_size)`."""

    steps: np.ndarray
    rows: np.ndarray


class FlatTargets(NamedTuple):
    """Targets in flat form: `steps` `(N,)`, `lengths` `(S,)`, `frames` `(F, O)`."""

    steps: np.ndarray
    lengths: np.ndarray
    frames: np.ndarray


# ---------------------------------------------------------------------- #
# Counts and positions.
# ---------------------------------------------------------------------- #
def offsets(counts):
    """Start of each group in a flat array: `[0, c0, c0 + c1, ...]` (len N)."""
    counts = np.asarray(counts)
    return np.cumsum(counts) - counts


def locate(flat_index, counts):
    """Maps a flat index to `(group, index within group)`."""
    starts = offsets(counts)
    group = int(np.searchsorted(starts + counts, flat_index, side="right"))
    return group, int(flat_index - starts[group])


def split(flat, counts):
    """Cuts `flat` (first axis) into `len(counts)` consecutive pieces."""
    return np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []


def step_frames(lengths, frames, max_steps):
    """Frames per outer step, zero padded: float32 `(S, max_steps, output_size)`.

    Args:
        lengths: int array `(S,)`, frames per outer step.
        frames: array `(F, output_size)`, `F = lengths.sum()`.
        max_steps: int, the slots per outer step (`>= lengths.max()`).
    """
    out = np.zeros((len(lengths), max_steps, frames.shape[1]), np.float32)
    step = np.repeat(np.arange(len(lengths)), lengths)  # (F,) the outer step of each frame
    slot = np.arange(len(frames)) - np.repeat(offsets(lengths), lengths)  # (F,)
    out[step, slot] = frames
    return out


# ---------------------------------------------------------------------- #
# Checks.
# ---------------------------------------------------------------------- #
def check_lengths(targets, max_steps):
    """Raises naming the first `targets[n][t]` with more than `max_steps` frames."""
    over = np.flatnonzero(targets.lengths > max_steps)
    if len(over):
        n, t = locate(int(over[0]), targets.steps)
        raise ValueError(
            f"targets[{n}][{t}] has {targets.lengths[over[0]]} frames, more than "
            f"max_steps={max_steps}"
        )


def check_pair(inputs, targets):
    """Raises unless `inputs` and `targets` have the same sequences and steps.

    Args:
        inputs: `FlatInputs`.
        targets: `FlatTargets`.
    """
    steps_x, steps_y = inputs.steps, targets.steps
    if len(steps_x) != len(steps_y):
        raise ValueError(f"inputs has {len(steps_x)} sequences but targets has {len(steps_y)}")
    bad = np.flatnonzero(steps_x != steps_y)
    if len(bad):
        n = int(bad[0])
        raise ValueError(
            f"targets[{n}] has {steps_y[n]} outer steps, but inputs[{n}] has {steps_x[n]}")


def _numeric(value, name, shape_doc):
    """`value` as a 2-D numeric array, or a `ValueError` naming `name`."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype.kind == "O":
        raise checks.invalid(name, f"a rectangular {shape_doc} array of numbers", value)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"Received an invalid value for argument `{name}`, expected "
                         f"an array of numbers, got dtype {array.dtype}.")
    if array.ndim != 2:
        raise ValueError(f"Received an invalid value for argument `{name}`, expected "
                         f"shape {shape_doc}, got shape {array.shape}.")
    return array


def _as_list(value, name, what):
    try:
        return list(value)
    except TypeError:
        raise checks.invalid(name, f"a list of {what} arrays", value) from None


def _check_finite(flat, counts, name):
    """Raises naming `name[n][t]`, the first row of `flat` with a non-finite value."""
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        n, t = locate(row, counts)
        raise ValueError(
            f"{name}[{n}][{t}] has a non-finite value (nan, inf or beyond float32): {flat[row]}")


def _cast(array, dtype):
    if dtype is None:
        return array
    with np.errstate(over="ignore"):  # overflow shows as inf, reported after
        return array.astype(dtype, copy=False)


def _is_tensor(value):
    return type(value).__module__.startswith("tensorflow")


def _is_ragged(value):
    return _is_tensor(value) and hasattr(value, "ragged_rank")


# ---------------------------------------------------------------------- #
# Inputs.
# ---------------------------------------------------------------------- #
def flatten_inputs(inputs, dtype=np.float32):
    """Validates inputs and returns them in flat form.

    Args:
        inputs: a list of `N` arrays `(T_n, input_size)`, one array
            `(N, T, input_size)`, or a `tf.RaggedTensor`
            `(N, None, input_size)`.
        dtype: the dtype of `rows`; `None` keeps the input's.

    Returns:
        `FlatInputs(steps (N,), rows (S, input_size))`.

    Raises:
        ValueError: no sequence, a sequence of 0 steps, a non-numeric or
            ragged array, widths that differ, or a non-finite value; the
            message names `inputs[n]` (and `[t]`).

    Example:

    >>> flatten_inputs([np.zeros((2, 3)), np.ones((1, 3))]).steps.tolist()
    [2, 1]
    """
    sequences = None
    if _is_ragged(inputs):
        if inputs.shape.rank != 3 or inputs.ragged_rank != 1:
            raise ValueError(
                "Received an invalid value for argument `inputs`, expected a "
                f"RaggedTensor of shape (N, None, input_size), got shape {inputs.shape}.")
        steps = inputs.row_lengths().numpy().astype(np.int64)
        rows = inputs.values.numpy()
    elif _is_tensor(inputs) or isinstance(inputs, np.ndarray):
        array = np.asarray(inputs)
        if array.ndim != 3 or array.dtype.kind not in "iuf":
            raise ValueError(
                "Received an invalid value for argument `inputs`, expected a list of "
                "(T, input_size) arrays or one (N, T, input_size) array of numbers, "
                f"got an array of shape {array.shape}, dtype {array.dtype}.")
        steps = np.full(array.shape[0], array.shape[1], np.int64)
        rows = array.reshape(-1, array.shape[2])
    else:
        sequences = _as_list(inputs, "inputs", "(T, input_size)")
        try:
            steps = np.fromiter(map(len, sequences), np.int64, len(sequences))
            rows = np.concatenate(sequences, axis=0) if sequences else None
        except (ValueError, TypeError):
            rows = None
        if rows is not None and (rows.ndim != 2 or rows.dtype.kind not in "iuf"):
            rows = None
        if rows is None and sequences:
            _explain_inputs(sequences)
    if len(steps) == 0:
        raise ValueError("inputs is empty; need at least one sequence")
    if (steps == 0).any():
        n = int(np.argmax(steps == 0))
        raise ValueError(f"inputs[{n}] has 0 outer steps; every sequence needs T >= 1")
    rows = _cast(rows, dtype)
    _check_finite(rows, steps, "inputs")
    return FlatInputs(steps, rows)


def _explain_inputs(sequences):
    """Raises naming the first sequence that could not be stacked."""
    width = None
    for n, sequence in enumerate(sequences):
        if hasattr(sequence, "__len__") and len(sequence) == 0:
            raise ValueError(f"inputs[{n}] has 0 outer steps; every sequence needs T >= 1")
        array = _numeric(sequence, f"inputs[{n}]", "(T, input_size)")
        if width is not None and array.shape[1] != width:
            raise ValueError(
                f"inputs[{n}] has width {array.shape[1]}, but inputs[0] has width {width}")
        width = array.shape[1]
    raise ValueError("inputs could not be stacked into (T, input_size) arrays")


# ---------------------------------------------------------------------- #
# Targets.
# ---------------------------------------------------------------------- #
def ragged_parts(rt):
    """`FlatTargets` of a `tf.RaggedTensor` `(N, T, None, output_size)`."""
    if rt.shape.rank != 4:
        raise ValueError(
            "Received an invalid value for argument `targets`, expected a RaggedTensor "
            f"of shape (N, T, None, output_size), got shape {rt.shape}.")
    steps = rt.row_lengths().numpy()
    inner = rt.values  # (S, None, O)
    if _is_ragged(inner):
        lengths = inner.row_lengths().numpy()
        frames = inner.values
        if _is_ragged(frames):
            raise ValueError("targets: the frame dimension (output_size) must be uniform")
        frames = frames.numpy()
    else:  # every Out has the same length
        frames = inner.numpy()
        lengths = np.full(frames.shape[0], frames.shape[1], np.int64)
        frames = frames.reshape(-1, frames.shape[-1])
    return FlatTargets(steps.astype(np.int64), lengths.astype(np.int64), frames)


def flatten_targets(targets, output_size=None, dtype=np.float32, need_width=True):
    """Validates targets and returns them in flat form.

    Args:
        targets: a list of `N` lists of `T_n` arrays `(L, output_size)` (an
            empty `Out` may be `[]` or a `(0, output_size)` array), or a
            `tf.RaggedTensor` `(N, T, None, output_size)`.
        output_size: int or None. Checked when given; inferred otherwise.
        dtype: the dtype of `frames`; `None` keeps the input's.
        need_width: when False, targets without any frame give `frames` of
            shape `(0, 0)` instead of an error.

    Returns:
        `FlatTargets(steps (N,), lengths (S,), frames (F, output_size))`.

    Raises:
        ValueError: a non-numeric or ragged `Out`, widths that differ, a
            non-finite value, or no frame at all (without `output_size`);
            the message names `targets[n][t]`.

    Example:

    >>> flat = flatten_targets([[np.ones((2, 2)), []]])
    >>> flat.steps.tolist(), flat.lengths.tolist(), flat.frames.shape
    ([2], [2, 0], (2, 2))
    """
    if _is_ragged(targets):
        steps, lengths, frames = ragged_parts(targets)
    else:
        steps, lengths, frames = _flatten_lists(targets, output_size, need_width)
    if output_size is not None and frames.shape[1] != output_size:
        raise ValueError(
            f"targets have frames of width {frames.shape[1]}, but output_size={output_size}")
    frames = _cast(frames, dtype)
    if len(frames):
        bad = ~np.isfinite(frames).all(axis=1)
        if bad.any():
            step, _ = locate(int(np.argmax(bad)), lengths)
            n, t = locate(step, steps)
            raise ValueError(
                f"targets[{n}][{t}] has a non-finite value (nan, inf or beyond float32)")
    return FlatTargets(steps, lengths, frames)


def _flatten_lists(targets, output_size, need_width):
    """`(steps, lengths, frames)` of nested lists, or a `ValueError` saying where."""
    sequences = _as_list(targets, "targets", "lists of (L, output_size)")
    try:
        steps = np.fromiter(map(len, sequences), np.int64, len(sequences))
        outs = [out for sequence in sequences for out in sequence]  # (S,) every Out
        lengths = np.fromiter(map(len, outs), np.int64, len(outs))
        nonempty = list(itertools.compress(outs, lengths))
        frames = np.concatenate(nonempty, axis=0) if nonempty else None
    except (ValueError, TypeError):
        frames, nonempty = None, [None]
    if frames is not None and (frames.ndim != 2 or frames.dtype.kind not in "iuf"
                               or (output_size is not None and frames.shape[1] != output_size)):
        frames = None
    if frames is None and nonempty:
        _explain_targets(sequences, output_size)
    if frames is None:  # not a single frame
        widths = [out.shape[1] for out in outs if isinstance(out, np.ndarray) and out.ndim == 2]
        width = output_size if output_size is not None else (widths[0] if widths else None)
        if width is None and not need_width:
            width = 0
        if width is None:
            raise ValueError(
                "targets has no frames at all, so output_size cannot be inferred; "
                "pass output_size")
        frames = np.zeros((0, width))
    return steps, lengths, frames


def _explain_targets(sequences, output_size):
    """Raises naming the first `Out` that could not be stacked."""
    reference = None if output_size is None else (output_size, f"output_size={output_size}")
    for n, sequence in enumerate(sequences):
        outs = _as_list(sequence, f"targets[{n}]", "(L, output_size)")
        for t, out in enumerate(outs):
            try:
                if len(out) == 0:
                    continue
            except TypeError:
                pass
            array = _numeric(out, f"targets[{n}][{t}]", "(L, output_size)")
            if reference is not None and array.shape[1] != reference[0]:
                raise ValueError(
                    f"targets[{n}][{t}] has frames of width {array.shape[1]}, but {reference[1]}")
            reference = reference or (array.shape[1],
                                      f"targets[{n}][{t}] has width {array.shape[1]}")
    raise ValueError("targets could not be stacked into (L, output_size) arrays")


def pad_targets(targets, max_steps, output_size=None):
    """Pads ragged targets to dense frames and per-step lengths.

    Args:
        targets: a list of N lists of `T_n` arrays `(L, output_size)` with
            `0 <= L <= max_steps`, or a `tf.RaggedTensor`
            `(N, T, None, output_size)`.
        max_steps: int, the cap `M` on frames per outer step.
        output_size: int or None. Checked when given; inferred otherwise
            (needed only if there is no frame at all).

    Returns:
        `(frames, lengths)`: `frames` float32 `(N, T_max, M, output_size)`,
        zero beyond each length; `lengths` int32 `(N, T_max)`, 0 on padded
        outer steps.

    Raises:
        ValueError: a malformed array, a non-finite value, or a length over
            `max_steps`; the message names `targets[n][t]`.

    Example:

    >>> frames, lengths = pad_targets([[np.ones((2, 2)), []]], max_steps=3)
    >>> frames.shape, lengths.tolist()
    ((1, 2, 3, 2), [[2, 0]])
    """
    max_steps = checks.check_max_steps(max_steps)
    flat = flatten_targets(targets, output_size)
    check_lengths(flat, max_steps)
    count = len(flat.steps)
    longest = int(flat.steps.max()) if count else 0
    frames = np.zeros((count, longest, max_steps, flat.frames.shape[1]), np.float32)
    lengths = np.zeros((count, longest), np.int32)
    sequence = np.repeat(np.arange(count), flat.steps)  # (S,) the sequence of each step
    step = np.arange(len(flat.lengths)) - np.repeat(offsets(flat.steps), flat.steps)
    frames[sequence, step] = step_frames(flat.lengths, flat.frames, max_steps)
    lengths[sequence, step] = flat.lengths
    return frames, lengths
