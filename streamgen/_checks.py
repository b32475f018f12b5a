"""Validation shared by `Stream` and `LiteStream`, in numpy only.

Nothing here imports TensorFlow: `streamgen.lite` runs on `numpy` and
`ai-edge-litert` alone and must give the same errors, word for word, as the
TensorFlow path. Each helper takes a `spec`: any object with the attributes
it reads (`input_size`, `max_steps`), a `sg.StreamGen` or a `LiteStream`.
"""

import math

import numpy as np

_SMALL = 256  # inputs up to this many values are checked in pure Python


def resolve_cap(spec, max_steps):
    """A runtime cap in `[1, spec.max_steps]`; `None` -> `spec.max_steps`.

    Raises:
        ValueError: if `max_steps` is not an integer in that range.
    """
    if max_steps is None:
        return spec.max_steps
    if (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
            or not 1 <= max_steps <= spec.max_steps):
        raise ValueError(
            "Received an invalid value for argument `max_steps`, expected an "
            f"integer in [1, {spec.max_steps}] (the trained cap), got {max_steps!r}."
        )
    return int(max_steps)


def check_inputs(spec, x, name, ndim):
    """Validates inputs and returns them as a float32 array.

    Args:
        spec: has `input_size`, the width of the last dimension.
        x: array-like.
        name: the argument's name, for messages.
        ndim: int or tuple of ints, the accepted ranks.

    Returns:
        A float32 `np.ndarray` (no copy when `x` already is one).

    Raises:
        ValueError: wrong rank, wrong width, or non-finite values.
    """
    try:
        array = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected an "
            f"array of numbers: {error}"
        ) from None
    if array.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected "
            f"{_rank_text(ndim)} array with last dimension "
            f"input_size={spec.input_size}, got shape {array.shape}."
        )
    if array.shape[-1] != spec.input_size:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected last "
            f"dimension input_size={spec.input_size}, got shape {array.shape}."
        )
    # Fast paths (a step at batch 1 costs microseconds): a small input's
    # float64 sum is finite iff every value is (float32 values cannot
    # overflow it); a larger one's x.x likewise, or it overflowed, which the
    # exact check then clears. The index is looked up on error only.
    flat = array.reshape(-1)
    if array.size <= _SMALL:
        finite = math.isfinite(sum(flat.tolist()))
    else:
        with np.errstate(over="ignore"):
            finite = math.isfinite(flat.dot(flat)) or bool(np.all(np.isfinite(array)))
    if not finite:
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(
            f"Received an invalid value for argument `{name}`: it holds a "
            f"non-finite value ({array[where]}) at index {where}."
        )
    return array


def check_lengths(spec, lengths, shape):
    """Validates forced lengths; returns them as int32 `(B, T)`."""
    array = np.asarray(lengths)
    if array.shape != tuple(shape) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            "Received an invalid value for argument `lengths`, expected an "
            f"integer array of shape {tuple(shape)}, got {array.dtype} {array.shape}."
        )
    if array.size and (array.min() < 0 or array.max() > spec.max_steps):
        raise ValueError(
            "Received an invalid value for argument `lengths`, expected values "
            f"in [0, max_steps={spec.max_steps}], got min {array.min()} and "
            f"max {array.max()}."
        )
    return array.astype(np.int32)


def check_batch(batch, carried, fresh):
    """Raises unless a stream carrying `carried` rows may take `batch` rows.

    A fresh (or reset) stream takes any batch size.
    """
    if carried is not None and batch != carried and not fresh:
        raise ValueError(
            f"Received an input batch of {batch} rows, but this stream "
            f"carries state for {carried}; call reset() or "
            "set_state() to change the batch size."
        )


def stop_items(stop, is_single):
    """A `stop=` argument as a list of its elements (not yet checked).

    Args:
        stop: one criterion, a list/tuple of them, or `[]`.
        is_single: callable, True for one criterion (not a list).

    Raises:
        TypeError: if `stop` is neither a criterion nor a list/tuple.
    """
    if is_single(stop):
        return [stop]
    if not isinstance(stop, (list, tuple)):
        raise TypeError(
            "Received an invalid value for argument `stop`, expected a stop "
            "criterion (e.g. sg.StopHead(0.5)), a list of them, or [], "
            f"got {stop!r}."
        )
    return list(stop)


def bad_stop_item(item):
    """The `TypeError` for an element of `stop=` that is not a criterion."""
    return TypeError(
        "Received an invalid element in argument `stop`, expected a "
        f"stop criterion such as sg.StopHead or sg.L2Norm, got {item!r}."
    )


def check_state(state, sizes):
    """Validates a state nest for `set_state`.

    Args:
        state: what the user passed.
        sizes: `{"outer": [int, ...], "inner": [int, ...]}`, the width of
            each state tensor.

    Returns:
        `(restored, batch)`: float32 copies in the same nest, and the batch
        size they carry.

    Raises:
        ValueError: if the nest or a shape does not match `sizes`.
    """
    if not isinstance(state, dict) or set(state) != set(sizes):
        raise ValueError(
            "Received an invalid value for argument `state`, expected a "
            f"dict with keys {sorted(sizes)}, got {describe(state)}."
        )
    restored, batch = {}, None
    for key, widths in sizes.items():
        arrays = state[key]
        if not isinstance(arrays, (list, tuple)) or len(arrays) != len(widths):
            raise ValueError(
                f"Received an invalid value for argument `state`: "
                f"state[{key!r}] must be a list of {len(widths)} arrays, "
                f"got {describe(arrays)}."
            )
        restored[key] = []
        for index, (array, width) in enumerate(zip(arrays, widths)):
            array = np.asarray(array, np.float32)
            batch = array.shape[0] if batch is None and array.ndim == 2 else batch
            if array.shape != (batch, width):
                raise ValueError(
                    f"Received an invalid value for argument `state`: "
                    f"state[{key!r}][{index}] must have shape "
                    f"({batch if batch is not None else 'batch'}, "
                    f"{width}), got {array.shape}."
                )
            restored[key].append(array.copy())
    return restored, batch


def split_outputs(frames, lengths, single):
    """`Out[i]` per row from the padded frame buffer.

    Args:
        frames: float array `(B, max_steps, output_size)`.
        lengths: int array `(B,)`.
        single: whether the input was 1-D (one stream).

    Returns:
        For `single`, an `np.ndarray (L, output_size)`; else a list of `B`.
    """
    if single:
        return frames[0, : lengths[0]]
    return [frames[b, :length] for b, length in enumerate(lengths.tolist())]


def describe(value):
    """A `repr` cut to 80 characters, for messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _rank_text(ndim):
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    return " or ".join(f"a {n}-D" for n in ranks)
