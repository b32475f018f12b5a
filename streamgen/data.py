"""Training data: ragged targets <-> padded tensors + masks, tf.data.

A data set is N sequences. Sequence `n` has `T_n >= 1` outer steps; at outer
step `t` it has an input vector `x[n][t]` (`input_size`) and a target
`Out[n][t]` of `L = 0..max_steps` frames (`output_size` each).

In memory:

- `inputs`: a list of N float arrays `(T_n, input_size)`, or one array
  `(N, T, input_size)`.
- `targets`: a list of N lists of `T_n` float arrays `(L, output_size)`
  (an empty `Out` may be `[]` or a `(0, output_size)` array), or a
  `tf.RaggedTensor` `(N, T, None, output_size)`.

Padded (what the model trains on, `M = max_steps`): `frames`
`(N, T_max, M, output_size)`, `lengths` `(N, T_max)` and the masks of the
STOP-token scheme (see `masks_from_lengths`).

On disk: JSON Lines, see `streamgen.jsonl`.
"""

import itertools

import numpy as np

from streamgen._quiet import import_tensorflow

tf = import_tensorflow()

__all__ = [
    "pad_targets",
    "masks_from_lengths",
    "make_dataset",
    "ragged_from_padded",
    "targets_from_ragged",
]


# --------------------------------------------------------------------------
# Flat form: everything else is built on it.
#   T_n (N,) outer steps per sequence; x (S, I) one row per outer step;
#   L (S,) frames per outer step; f (F, O) all frames, F = L.sum().


def _check_max_steps(max_steps):
    if (
        isinstance(max_steps, bool)
        or not isinstance(max_steps, (int, np.integer))
        or max_steps < 1
    ):
        raise ValueError(f"max_steps must be a positive integer; received max_steps={max_steps!r}")
    return int(max_steps)


def _offsets(counts):
    """Start of each group in a flat array: `[0, c0, c0 + c1, ...]` (len N)."""
    return np.cumsum(counts) - counts


def _locate(flat_index, counts):
    """Maps a flat index to `(group, index within group)`."""
    starts = _offsets(counts)
    group = int(np.searchsorted(starts + counts, flat_index, side="right"))
    return group, int(flat_index - starts[group])


def _numeric(value, name, shape_doc):
    """`value` as a 2-D numeric array, or a ValueError naming `name`."""
    try:
        a = np.asarray(value)
    except (ValueError, TypeError):
        a = None
    if a is None or a.dtype.kind == "O":
        raise ValueError(
            f"{name} must be a rectangular {shape_doc} array of numbers; received {value!r:.80}"
        )
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold numbers; received dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape {shape_doc}; received shape {a.shape}")
    return a


def _as_list(value, name, what):
    try:
        return list(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a list of {what} arrays; received {value!r:.80}"
        ) from None


def _first_nonfinite(flat, counts, name):
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        n, t = _locate(row, counts)
        raise ValueError(
            f"{name}[{n}][{t}] has a non-finite value (nan, inf or beyond float32): {flat[row]}"
        )


def _flatten_inputs(inputs, dtype=np.float32):
    """Returns `(T_n, x)` from a list of `(T_n, I)` arrays or a `(N, T, I)` array."""
    seqs = None
    if isinstance(inputs, tf.RaggedTensor):
        if inputs.shape.rank != 3 or inputs.ragged_rank != 1:
            raise ValueError(
                f"inputs as a RaggedTensor must have shape (N, None, input_size); received {inputs.shape}"
            )
        T_n = inputs.row_lengths().numpy().astype(np.int64)
        x = inputs.values.numpy()
    elif tf.is_tensor(inputs) or isinstance(inputs, np.ndarray):
        a = np.asarray(inputs)
        if a.ndim != 3 or a.dtype.kind not in "iuf":
            raise ValueError(
                "inputs must be a list of (T, input_size) arrays or one (N, T, input_size) "
                f"array of numbers; received an array of shape {a.shape}, dtype {a.dtype}"
            )
        T_n = np.full(a.shape[0], a.shape[1], np.int64)
        x = a.reshape(-1, a.shape[2])
    else:
        seqs = _as_list(inputs, "inputs", "(T, input_size)")
        try:
            T_n = np.fromiter(map(len, seqs), np.int64, len(seqs))
            x = np.concatenate(seqs, axis=0) if seqs else None
        except (ValueError, TypeError):
            x = None
        if x is not None and (x.ndim != 2 or x.dtype.kind not in "iuf"):
            x = None
    if x is None and seqs:
        width = None  # Find the culprit and say where it is.
        for n, s in enumerate(seqs):
            if hasattr(s, "__len__") and len(s) == 0:
                raise ValueError(f"inputs[{n}] has 0 outer steps; every sequence needs T >= 1")
            a = _numeric(s, f"inputs[{n}]", "(T, input_size)")
            if width is not None and a.shape[1] != width:
                raise ValueError(
                    f"inputs[{n}] has width {a.shape[1]}, but inputs[0] has width {width}"
                )
            width = a.shape[1]
        raise ValueError("inputs could not be stacked into (T, input_size) arrays")
    if len(T_n) == 0:
        raise ValueError("inputs is empty; need at least one sequence")
    if (T_n == 0).any():
        n = int(np.argmax(T_n == 0))
        raise ValueError(f"inputs[{n}] has 0 outer steps; every sequence needs T >= 1")
    if dtype is not None:
        with np.errstate(over="ignore"):  # Overflow shows as inf, reported below.
            x = x.astype(dtype, copy=False)
    _first_nonfinite(x, T_n, "inputs")
    return T_n, x


def _ragged_parts(rt):
    """`(T_n, L, f)` from a `tf.RaggedTensor` `(N, T, None, O)`."""
    if rt.shape.rank != 4:
        raise ValueError(
            f"targets as a RaggedTensor must have shape (N, T, None, output_size); received {rt.shape}"
        )
    T_n = rt.row_lengths().numpy()
    inner = rt.values  # (S, None, O)
    if isinstance(inner, tf.RaggedTensor):
        L = inner.row_lengths().numpy()
        f = inner.values
        if isinstance(f, tf.RaggedTensor):
            raise ValueError("targets: the frame dimension (output_size) must be uniform")
        f = f.numpy()
    else:  # Every Out has the same length.
        f = inner.numpy()
        L = np.full(f.shape[0], f.shape[1], np.int64)
        f = f.reshape(-1, f.shape[-1])
    return T_n.astype(np.int64), L.astype(np.int64), f


def _flatten_targets(targets, output_size=None, dtype=np.float32, need_width=True):
    """Returns `(T_n, L, f)`; see the module docstring for accepted forms."""
    if isinstance(targets, tf.RaggedTensor):
        T_n, L, f = _ragged_parts(targets)
        seqs = None
    else:
        seqs = _as_list(targets, "targets", "lists of (L, output_size)")
        try:
            T_n = np.fromiter(map(len, seqs), np.int64, len(seqs))
            steps = [out for s in seqs for out in s]
            L = np.fromiter(map(len, steps), np.int64, len(steps))
            nonempty = list(itertools.compress(steps, L))
            f = np.concatenate(nonempty, axis=0) if nonempty else None
        except (ValueError, TypeError):
            T_n = L = f = None
            nonempty = [None]
        if f is not None and (f.ndim != 2 or f.dtype.kind not in "iuf"):
            f = None
        if f is not None and output_size is not None and f.shape[1] != output_size:
            f = None
        if f is None and nonempty:
            ref = None if output_size is None else (output_size, f"output_size={output_size}")
            for n, s in enumerate(seqs):
                outs = _as_list(s, f"targets[{n}]", "(L, output_size)")
                for t, out in enumerate(outs):
                    try:
                        if len(out) == 0:
                            continue
                    except TypeError:
                        pass
                    a = _numeric(out, f"targets[{n}][{t}]", "(L, output_size)")
                    if ref is not None and a.shape[1] != ref[0]:
                        raise ValueError(
                            f"targets[{n}][{t}] has frames of width {a.shape[1]}, but {ref[1]}"
                        )
                    ref = ref or (a.shape[1], f"targets[{n}][{t}] has width {a.shape[1]}")
            raise ValueError("targets could not be stacked into (L, output_size) arrays")
        if f is None:
            widths = [
                out.shape[1] for out in steps if isinstance(out, np.ndarray) and out.ndim == 2
            ]
            width = output_size if output_size is not None else (widths[0] if widths else None)
            if width is None and not need_width:
                width = 0
            if width is None:
                raise ValueError(
                    "targets has no frames at all, so output_size cannot be inferred; pass output_size"
                )
            f = np.zeros((0, width))
    if output_size is not None and f.shape[1] != output_size:
        raise ValueError(
            f"targets have frames of width {f.shape[1]}, but output_size={output_size}"
        )
    if dtype is not None:
        with np.errstate(over="ignore"):  # Overflow shows as inf, reported below.
            f = f.astype(dtype, copy=False)
    if len(f):
        bad = ~np.isfinite(f).all(axis=1)
        if bad.any():
            s, _ = _locate(int(np.argmax(bad)), L)
            n, t = _locate(s, T_n)
            raise ValueError(
                f"targets[{n}][{t}] has a non-finite value (nan, inf or beyond float32)"
            )
    return T_n, L, f


def _check_lengths(T_n, L, max_steps):
    over = np.flatnonzero(L > max_steps)
    if len(over):
        n, t = _locate(int(over[0]), T_n)
        raise ValueError(
            f"targets[{n}][{t}] has {L[over[0]]} frames, more than max_steps={max_steps}"
        )


def _check_pair(T_x, T_y):
    if len(T_x) != len(T_y):
        raise ValueError(f"inputs has {len(T_x)} sequences but targets has {len(T_y)}")
    bad = np.flatnonzero(T_x != T_y)
    if len(bad):
        n = int(bad[0])
        raise ValueError(f"targets[{n}] has {T_y[n]} outer steps, but inputs[{n}] has {T_x[n]}")


def _step_frames(L, f, max_steps):
    """Frames per outer step, zero padded: `(S, max_steps, O)` float32."""
    out = np.zeros((len(L), max_steps, f.shape[1]), np.float32)
    step = np.repeat(np.arange(len(L)), L)
    out[step, np.arange(len(f)) - np.repeat(_offsets(L), L)] = f
    return out


# --------------------------------------------------------------------------
# Public API.


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
    max_steps = _check_max_steps(max_steps)
    T_n, L, f = _flatten_targets(targets, output_size)
    _check_lengths(T_n, L, max_steps)
    N, T_max = len(T_n), int(T_n.max()) if len(T_n) else 0
    frames = np.zeros((N, T_max, max_steps, f.shape[1]), np.float32)
    lengths = np.zeros((N, T_max), np.int32)
    seq = np.repeat(np.arange(N), T_n)
    t = np.arange(len(L)) - np.repeat(_offsets(T_n), T_n)
    frames[seq, t] = _step_frames(L, f, max_steps)
    lengths[seq, t] = L
    return frames, lengths


def masks_from_lengths(lengths, outer_mask, max_steps):
    """Frame mask, STOP labels and STOP mask for given lengths.

    With `L = lengths[..., None]` and `j = 0 .. max_steps - 1`:
    `frame_mask = j < L` (frames that are emitted), `stop_labels = j == L`
    (the STOP token; none when `L == max_steps`), `stop_mask = j <= L`
    (steps whose stop decision is trained). All three are zero where
    `outer_mask` is 0.

    Args:
        lengths: int array or tensor `(..., T)`, values in `0..max_steps`.
        outer_mask: array or tensor `(..., T)`, 1 on real outer steps; None
            means all steps are real.
        max_steps: int, the cap `M`.

    Returns:
        `(frame_mask, stop_labels, stop_mask)`, each float32 `(..., T, M)`:
        numpy arrays for numpy input, tensors if either argument is a tensor.

    Raises:
        ValueError: (numpy input) a length outside `0..max_steps`.

    Example:

    >>> fm, sl, sm = masks_from_lengths(np.array([[1]]), None, 3)
    >>> fm.tolist(), sl.tolist(), sm.tolist()
    ([[[1.0, 0.0, 0.0]]], [[[0.0, 1.0, 0.0]]], [[[1.0, 1.0, 0.0]]])
    """
    max_steps = _check_max_steps(max_steps)
    if tf.is_tensor(lengths) or tf.is_tensor(outer_mask):
        L = tf.cast(lengths, tf.int32)[..., None]
        om = (
            tf.ones_like(L, tf.float32)
            if outer_mask is None
            else tf.cast(outer_mask, tf.float32)[..., None]
        )
        j = tf.range(max_steps, dtype=tf.int32)
        return tuple(tf.cast(c, tf.float32) * om for c in (j < L, tf.equal(j, L), j <= L))
    L = np.asarray(lengths)
    if L.size and (L.min() < 0 or L.max() > max_steps):
        raise ValueError(
            f"lengths must lie in 0..max_steps={max_steps}; received values {L.min()}..{L.max()}"
        )
    L = L[..., None]
    om = (
        np.ones(L.shape, np.float32)
        if outer_mask is None
        else np.asarray(outer_mask, np.float32)[..., None]
    )
    j = np.arange(max_steps)
    return tuple((c * om).astype(np.float32) for c in (j < L, j == L, j <= L))


def make_dataset(
    inputs, targets, batch_size=32, shuffle=True, seed=None, *, max_steps=9, output_size=None
):
    """A `tf.data.Dataset` of padded, masked batches for teacher forcing.

    Each batch is padded to its own longest sequence `T` (the last batch may
    hold fewer than `batch_size` sequences). Only indices are shuffled;
    the data are gathered and padded per batch.

    Args:
        inputs: a list of N arrays `(T_n, input_size)` or one array
            `(N, T, input_size)`.
        targets: a list of N lists of `T_n` arrays `(L, output_size)`, or a
            `tf.RaggedTensor` `(N, T, None, output_size)`.
        batch_size: int, sequences per batch.
        shuffle: bool, reshuffle the sequences every epoch.
        seed: int or None; with a seed the order is the same on every run.
        max_steps: int, the cap `M` on frames per outer step.
        output_size: int or None; needed only if no target has a frame.

    Returns:
        A dataset of `(x, y)` dicts:
        `x = {"inputs": (B, T, I) float32, "frames": (B, T, M, O) float32,
        "lengths": (B, T) int32, "outer_mask": (B, T) float32}` and
        `y = {"frames": (B, T, M, O), "frame_mask": (B, T, M),
        "stop_labels": (B, T, M), "stop_mask": (B, T, M)}` (all float32).

    Raises:
        ValueError: inputs and targets disagree (N, T per sequence), widths
            are inconsistent, a value is not finite, a length exceeds
            `max_steps` or a sequence is empty; the message names the
            argument, sequence and outer step, e.g.
            `targets[3][5] has 12 frames, more than max_steps=9`.

    Example:

    >>> ds = make_dataset([np.zeros((4, 3))], [[np.zeros((2, 2))] * 4])
    >>> x, y = next(iter(ds))
    >>> x["frames"].shape
    TensorShape([1, 4, 9, 2])
    """
    max_steps = _check_max_steps(max_steps)
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be a positive integer; received batch_size={batch_size!r}"
        )
    T_x, x = _flatten_inputs(inputs)
    T_y, L, f = _flatten_targets(targets, output_size)
    _check_pair(T_x, T_y)
    _check_lengths(T_y, L, max_steps)
    N, I, O = len(T_x), x.shape[1], f.shape[1]

    xr = tf.RaggedTensor.from_row_lengths(x, T_x)
    fr = tf.RaggedTensor.from_row_lengths(_step_frames(L, f, max_steps), T_x)
    lr = tf.RaggedTensor.from_row_lengths(L.astype(np.int32), T_x)

    def batch(idx):
        inp = tf.ensure_shape(tf.gather(xr, idx).to_tensor(), [None, None, I])
        frames = tf.ensure_shape(tf.gather(fr, idx).to_tensor(), [None, None, max_steps, O])
        rows = tf.gather(lr, idx)
        lengths = rows.to_tensor()
        outer_mask = tf.sequence_mask(rows.row_lengths(), tf.shape(lengths)[1], tf.float32)
        frame_mask, stop_labels, stop_mask = masks_from_lengths(lengths, outer_mask, max_steps)
        x = {"inputs": inp, "frames": frames, "lengths": lengths, "outer_mask": outer_mask}
        y = {
            "frames": frames,
            "frame_mask": frame_mask,
            "stop_labels": stop_labels,
            "stop_mask": stop_mask,
        }
        return x, y

    ds = tf.data.Dataset.range(N)
    if shuffle:
        ds = ds.shuffle(N, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(batch).prefetch(tf.data.AUTOTUNE)


def ragged_from_padded(frames, lengths):
    """Turns padded frames back into a ragged tensor.

    Args:
        frames: array or tensor `(N, T, M, O)`.
        lengths: int array or tensor `(N, T)`, frames kept per outer step.

    Returns:
        A `tf.RaggedTensor` `(N, T, None, O)`: `rt[n, t]` is
        `frames[n, t, :lengths[n, t]]`.
    """
    frames = tf.convert_to_tensor(frames)
    lengths = tf.cast(lengths, tf.int64)
    shape = tf.shape(frames, out_type=tf.int64)
    flat = tf.reshape(frames, tf.concat([[-1], shape[2:]], 0))
    inner = tf.RaggedTensor.from_tensor(flat, lengths=tf.reshape(lengths, [-1]))
    return tf.RaggedTensor.from_uniform_row_length(inner, shape[1])


def targets_from_ragged(rt):
    """Turns a ragged tensor `(N, T, None, O)` into nested lists of arrays.

    Args:
        rt: a `tf.RaggedTensor` `(N, T, None, O)`.

    Returns:
        A list of N lists of `T_n` numpy arrays `(L, O)`.
    """
    T_n, L, f = _ragged_parts(rt)
    outs = np.split(f, np.cumsum(L)[:-1]) if len(L) else []
    bounds = np.cumsum(T_n)
    return [outs[b - n : b] for n, b in zip(T_n, bounds)]
