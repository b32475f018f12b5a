"""Values on the wire: a stream's state and `Out[i]` frames, TF-free.

A state on the wire (`STATE`) is a JSON object that is exact and checks
itself:

    {"format": "streamgen-state/2",
     "fingerprint": "sha256:3f5c0a9e1b2d4c6f",
     "sizes": {"outer": [64], "inner": [64]},
     "rows": 1,
     "data": "AAAAAAAAgD8..."}

`data` is the packed state (`rows` rows of `sum(sizes) + 4` float32
values, little-endian, row-major: model_a's state tensors, then model_b's,
side by side, then the row's seed and random position; see
`streamgen.runtimes.base`) in base64. `fingerprint` is the model's
(`Runtime.fingerprint`, equal for a `.keras` model and its `.tflite`
export), so a state moves between `sg.Stream`, `sg.LiteStream` and a remote
stream of the same model, and is refused by any other model.

Frames are written as the CLI prints them (`streamgen.data.text.frames_json`:
6 significant digits, `null` for a non-finite value); `frames_array` reads
them back.

Numpy only: the client (`streamgen.remote.client`) and the server share this.
"""

import base64
import binascii
import math

import numpy as np

from streamgen import checks
from streamgen import randomness
from streamgen.runtimes import base

FORMAT = "streamgen-state/2"  # 2: the seed and position columns
MAX_ROWS = 1 << 16  # bound on the rows of one STATE


# ---------------------------------------------------------------------- #
# Frames.
# ---------------------------------------------------------------------- #
def frames_array(value, output_size, name="out"):
    """The JSON value of `frames_json` -> float32 `(L, output_size)`.

    `null` (a non-finite value on the other side) becomes NaN.

    Raises:
        ValueError: if `value` is not a list of `output_size`-wide frames.
    """
    if not isinstance(value, list):
        raise checks.invalid(name, "a list of frames", value)
    if not value:
        return np.zeros((0, output_size), np.float32)
    try:
        array = np.array([[math.nan if v is None else v for v in frame] for frame in value],
                         np.float32)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 2 or array.shape[1] != output_size:
        raise checks.invalid(name, f"a list of frames of {output_size} numbers", value)
    return array


# ---------------------------------------------------------------------- #
# States.
# ---------------------------------------------------------------------- #
def dump_state(state, fingerprint, sizes):
    """A state -> its `STATE` object (a JSON-ready dict).

    Args:
        state: a packed float array `(B, S)`, or a state nest
            `{"outer": [(B, size), ...], "inner": [...]}`.
        fingerprint: the model's fingerprint (`runtime.fingerprint`).
        sizes: the model's `state_sizes`.

    Returns:
        `{"format", "fingerprint", "sizes", "rows", "data"}`.

    Raises:
        ValueError: if the state does not fit `sizes` or is not finite.

    Example:

    >>> from streamgen.remote.wire import load_state, dump_state
    >>> runtime, stream = sg.open_runtime(model), model.open_stream()
    >>> _ = stream.step(np.ones(3, "float32"))
    >>> value = dump_state(stream.get_state(), runtime.fingerprint,
    ...                      runtime.state_sizes)
    >>> packed, sizes = load_state(value, runtime.fingerprint, runtime.state_sizes)
    >>> packed.shape == (1, runtime.state_size)
    True
    """
    sizes = {"outer": [int(s) for s in sizes["outer"]],
             "inner": [int(s) for s in sizes["inner"]]}
    width = sum(sizes["outer"]) + sum(sizes["inner"]) + base.RANDOM_COLUMNS
    if isinstance(state, dict):
        packed = base.pack_nest(state, sizes)
    else:
        packed = checks.check_packed_state(state, width)
    data = np.ascontiguousarray(packed, "<f4").tobytes()
    return {"format": FORMAT, "fingerprint": str(fingerprint), "sizes": sizes,
            "rows": int(packed.shape[0]), "data": base64.b64encode(data).decode("ascii")}


def load_state(value, fingerprint=None, sizes=None, rows=None, name="state"):
    """A `STATE` object -> the packed float32 array `(rows, S)`, checked.

    Args:
        value: what `dump_state` made (parsed JSON).
        fingerprint: the fingerprint the state must carry; `None` accepts
            any (then `sizes` comes from the value).
        sizes: the `state_sizes` it must have; `None` accepts the value's.
        rows: the number of rows it must have; `None` accepts any >= 1.
        name: the argument's name, for messages.

    Returns:
        `(packed, sizes)`: float32 `(rows, S)` and the state sizes.

    Raises:
        ValueError: naming the problem: not a STATE, another model's
            fingerprint, other sizes, a wrong number of rows, data that is
            not base64 of the right length, or a non-finite value.
    """
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise checks.invalid(name, f'a state object with "format": "{FORMAT}" '
                              "(from get_state)", value)
    keys = {"format", "fingerprint", "sizes", "rows", "data"}
    if set(value) != keys:
        raise checks.invalid(name, f"a state object with the keys {sorted(keys)}",
                              sorted(value))
    if fingerprint is not None and value["fingerprint"] != fingerprint:
        raise ValueError(
            f"Received an invalid value for argument `{name}`: it is a state of "
            f"another model (fingerprint {checks.describe(value['fingerprint'])}; "
            f"this model's is {fingerprint!r}).")
    got = value["sizes"]
    if (not isinstance(got, dict) or set(got) != {"outer", "inner"}
            or not all(isinstance(got[k], list) and 1 <= len(got[k]) <= 16
                       and all(checks.is_int(s) and 1 <= s <= 1 << 20 for s in got[k])
                       for k in got)):
        raise checks.invalid(f"{name}['sizes']",
                              'a dict {"outer": [sizes], "inner": [sizes]}', got)
    if sizes is not None and (list(got["outer"]) != list(sizes["outer"])
                              or list(got["inner"]) != list(sizes["inner"])):
        raise ValueError(
            f"Received an invalid value for argument `{name}`: its state sizes are "
            f"{got}, this model's are {dict(sizes)}.")
    count = value["rows"]
    if not checks.is_int(count) or not 1 <= count <= MAX_ROWS:
        raise checks.invalid(f"{name}['rows']", f"an integer in [1, {MAX_ROWS}]", count)
    if rows is not None and count != rows:
        raise checks.invalid(f"{name}['rows']", f"{rows} (rows of this stream)", count)
    width = sum(got["outer"]) + sum(got["inner"]) + base.RANDOM_COLUMNS
    data = value["data"]
    try:
        raw = base64.b64decode(data.encode("ascii"), validate=True)
    except (AttributeError, UnicodeEncodeError, binascii.Error, ValueError):
        raise checks.invalid(f"{name}['data']", "base64 text", data) from None
    if len(raw) != count * width * 4:
        raise ValueError(
            f"Received an invalid value for argument `{name}`: its data holds "
            f"{len(raw)} bytes, expected {count} rows x {width} float32 values "
            f"= {count * width * 4} bytes.")
    packed = np.frombuffer(raw, "<f4").astype(np.float32).reshape(count, width)
    packed = checks.check_packed_state(packed, width, name=name)
    randomness.decode(packed[:, -base.RANDOM_COLUMNS:])  # whole 16-bit halves
    return packed, {"outer": list(got["outer"]), "inner": list(got["inner"])}
