"""Validation shared by every layer of streamgen, in numpy only: one rule,
one wording.

Nothing here imports TensorFlow: `streamgen.runtimes.lite` runs on `numpy` and
`ai-edge-litert` alone and must give the same errors, word for word, as the
TensorFlow path. Every message has the Keras form "Received an invalid value
for argument `name`, expected ..., got ...". Helpers that check inputs take a
`spec`: any object with `input_size` (a `sg.StreamGen`, a runtime).
"""

import math

import numpy as np

_SMALL = 256  # inputs up to this many values are checked in pure Python

# The largest `max_steps` a model may have. Decoding memory and time grow
# linearly with it (a `(B, max_steps, output_size)` frame buffer, and in a
# `.tflite` export up to 16 unrolled steps); the bound keeps a crafted
# config from asking for gigabytes. "A cap under 10" is the common case.
MAX_STEPS_LIMIT = 1024


def invalid(name, expected, value, owner=None):
    """The `ValueError` of the house style for argument `name`."""
    of = f" of {owner}" if owner else ""
    return ValueError(
        f"Received an invalid value for argument `{name}`{of}, expected "
        f"{expected}, got {describe(value)}."
    )


def one_of(name, value, choices):
    """`value` if it is one of `choices`, else the house-style `ValueError`
    (`expected 'a' or 'b'`, `expected one of 'a', 'b' or 'c'`)."""
    if value in choices:
        return value
    quoted = [repr(c) for c in choices]
    expected = (" or ".join(quoted) if len(quoted) <= 2
                else "one of " + ", ".join(quoted[:-1]) + " or " + quoted[-1])
    raise invalid(name, expected, value)


def is_int(value):
    """True for Python and numpy integers (not bools)."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def positive_int(name, value, owner=None, maximum=None):
    """`value` as an int >= 1 (and <= `maximum`), or the house `ValueError`."""
    if not is_int(value) or value < 1 or (maximum is not None and value > maximum):
        expected = ("a positive integer" if maximum is None
                    else f"an integer in [1, {maximum}]")
        raise invalid(name, expected, value, owner)
    return int(value)


def check_count(name, value):
    """`value` as an int >= 0, or the house `ValueError`."""
    if not is_int(value) or value < 0:
        raise invalid(name, "a non-negative integer", value)
    return int(value)


def check_max_steps(value, owner=None):
    """A model's `max_steps`: an int in `[1, MAX_STEPS_LIMIT]`."""
    return positive_int("max_steps", value, owner, maximum=MAX_STEPS_LIMIT)


def non_negative_float(name, value, allow_zero=True, owner=None):
    """A finite number `>= 0` (`> 0` without `allow_zero`), as a float."""
    number = float(value) if isinstance(value, (int, float, np.number)) else math.nan
    if (isinstance(value, bool) or not math.isfinite(number) or number < 0
            or (number == 0 and not allow_zero)):
        bound = "non-negative" if allow_zero else "positive"
        raise invalid(name, f"a finite {bound} number", value, owner)
    return number


def resolve_cap(trained_max_steps, max_steps):
    """A runtime cap in `[1, trained_max_steps]`; `None` -> `trained_max_steps`.

    Raises:
        ValueError: if `max_steps` is not an integer in that range.
    """
    if max_steps is None:
        return trained_max_steps
    if not is_int(max_steps) or not 1 <= max_steps <= trained_max_steps:
        raise invalid("max_steps", f"an integer in [1, {trained_max_steps}] "
                      "(the trained cap)", max_steps)
    return int(max_steps)


def check_temperature(owner, value):
    """A temperature: a positive finite number; returns a float.

    Raises:
        ValueError: naming `temperature` and echoing `value`.
    """
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise invalid("temperature", "a positive finite number", value, owner)
    return number


def check_threshold(owner, value):
    """The threshold rules of `sg.StopHead` and `sg.L2Norm`; returns a float.

    Any criterion: a number, not NaN (inf allowed). `StopHead`: in
    `[0, 1]`. `L2Norm`: `>= 0`.
    """
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(value, bool) or math.isnan(number):
        raise invalid("threshold", "a number", value, owner)
    if owner == "StopHead" and not 0.0 <= number <= 1.0:
        raise invalid("threshold", "a probability in [0, 1]", value, owner)
    if owner == "L2Norm" and number < 0:
        raise invalid("threshold", "a non-negative number", value, owner)
    return number


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
    array = as_float32(x, name, f"{_rank_text(ndim)} array of numbers")
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
    _check_finite(array, name)
    return array


def _check_finite(array, name):
    """Raises naming the first non-finite value of a float32 array."""
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


def as_float32(value, name, expected):
    """`np.asarray(value, float32)`, or the house `ValueError`.

    Strings, ragged nests and numbers beyond float32 (which would become
    inf) are refused by name.
    """
    if isinstance(value, np.ndarray) and value.dtype == np.float32:
        return value
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError
        with np.errstate(over="ignore"):
            return array.astype(np.float32, copy=False)
    except (TypeError, ValueError, OverflowError):
        raise invalid(name, expected, value) from None


def check_generate(generate, rows):
    """`generate=` of a step: `None` (all rows), or bool array `(rows,)`."""
    if generate is None:
        return None
    if isinstance(generate, (bool, np.bool_)):
        return None if generate else np.zeros(rows, bool)
    array = np.asarray(generate) if isinstance(generate, (list, tuple, np.ndarray)) else None
    if array is None or array.dtype != np.bool_ or array.shape not in ((rows,), ()):
        raise invalid("generate", f"a bool or a bool array of shape ({rows},)", generate)
    return np.broadcast_to(array, (rows,))


def check_thresholds(thresholds, rows, count):
    """`thresholds=` of a step: `None` or float `(rows, count)`, not NaN."""
    if thresholds is None:
        return None
    array = as_float32(thresholds, "thresholds", f"a float array of shape ({rows}, {count})")
    if array.shape != (rows, count) or np.isnan(array).any():
        raise invalid("thresholds", f"a float array of shape ({rows}, {count}) "
                      "without NaN", thresholds)
    return array


def check_caps(caps, rows, trained_max_steps):
    """`caps=` of a step: `None` or int `(rows,)` in `[0, trained_max_steps]`."""
    if caps is None:
        return None
    array = np.asarray(caps)
    if (array.shape != (rows,) or array.dtype.kind not in "iu"
            or (rows and (array.min() < 0 or array.max() > trained_max_steps))):
        raise invalid("caps", f"an int array of shape ({rows},) with values in "
                      f"[0, {trained_max_steps}]", caps)
    return array.astype(np.int32, copy=False)


def check_packed_state(packed, width, rows=None, name="state"):
    """A packed state: finite float32 `(rows, width)`."""
    array = as_float32(packed, name, f"a float array of shape (batch, {width})")
    if array.ndim != 2 or array.shape[1] != width or (rows is not None and len(array) != rows):
        expected = f"({'batch' if rows is None else rows}, {width})"
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"float array of shape {expected}, got shape {array.shape}."
        )
    _check_finite(array, name)
    return array


def check_batch(batch, carried, fresh):
    """Raises unless a stream carrying `carried` rows may take `batch` rows.

    A fresh (or reset) stream takes any batch size but 0.
    """
    if batch == 0:
        raise ValueError(
            "Received an invalid value for argument `x`, expected at least "
            "one row, got an array of 0 rows."
        )
    if carried is not None and batch != carried and not fresh:
        raise ValueError(
            f"Received an input batch of {batch} rows, but this stream "
            f"carries state for {carried}; call reset() or "
            "set_state() to change the batch size."
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
            where = f"state[{key!r}][{index}]"
            array = as_float32(array, "state", f"{where} to be an array of numbers")
            batch = array.shape[0] if batch is None and array.ndim == 2 else batch
            if array.shape != (batch, width):
                raise ValueError(
                    f"Received an invalid value for argument `state`: "
                    f"state[{key!r}][{index}] must have shape "
                    f"({batch if batch is not None else 'batch'}, "
                    f"{width}), got {array.shape}."
                )
            _check_finite(array, "state")
            restored[key].append(array.copy())
    return restored, batch


def describe(value):
    """A `repr` cut to 80 characters, for messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _rank_text(ndim):
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    return " or ".join(f"a {n}-D" for n in ranks)
