"""`streamgen.remote.wire`: STATE values and frames on the wire (numpy only)."""

import base64

import numpy as np
import pytest

from streamgen.data import text as jsontext
from streamgen.remote import wire
from streamgen.runtimes import base

SIZES = {"outer": [4], "inner": [3, 2]}
FP = "sha256:0123456789abcdef"


def nest(rows=1, seed=0):
    rng = np.random.default_rng(seed)
    return {"outer": [rng.normal(size=(rows, 4)).astype(np.float32)],
            "inner": [rng.normal(size=(rows, 3)).astype(np.float32),
                      rng.normal(size=(rows, 2)).astype(np.float32)]}


def test_round_trip_is_exact():
    state = nest(rows=2)
    value = wire.dump_state(state, FP, SIZES)
    assert value["format"] == wire.FORMAT and value["rows"] == 2
    assert set(value) == {"format", "fingerprint", "sizes", "rows", "data"}
    packed, sizes = wire.load_state(value, FP, SIZES)
    assert packed.shape == (2, 13) and sizes == SIZES  # + seed and position
    back = base.unpack_nest(packed, sizes)
    assert back["random"][0].tolist() == [[0, 0, 0, 0]] * 2  # a nest without: seed 0
    for key in ("outer", "inner"):
        for a, b in zip(back[key], state[key]):
            assert np.array_equal(a, b)
    # From a packed array too, and the same bytes.
    assert wire.dump_state(packed, FP, SIZES) == value


@pytest.mark.parametrize("change, message", [
    (lambda v: v.update(fingerprint="sha256:ffffffffffffffff"), "another model"),
    (lambda v: v.update(sizes={"outer": [4], "inner": [5]}), "state sizes are"),
    (lambda v: v.update(rows=2), "holds 52 bytes"),
    (lambda v: v.update(rows=0), "rows"),
    (lambda v: v.update(data="not base64!"), "base64"),
    (lambda v: v.update(format="other"), "format"),
    (lambda v: v.pop("data"), "keys"),
    (lambda v: v.update(data=base64.b64encode(
        np.array([np.nan] + [0] * 12, "<f4").tobytes()).decode()), "non-finite"),
    (lambda v: v.update(data=base64.b64encode(
        np.array([0] * 12 + [0.5], "<f4").tobytes()).decode()), "16-bit halves"),
])
def test_decode_names_the_problem(change, message):
    value = wire.dump_state(nest(), FP, SIZES)
    change(value)
    with pytest.raises(ValueError, match=message):
        wire.load_state(value, FP, SIZES, rows=None if message != "rows" else None)


def test_decode_checks_rows_and_non_dicts():
    value = wire.dump_state(nest(rows=2), FP, SIZES)
    with pytest.raises(ValueError, match=r"1 \(rows of this stream\)"):
        wire.load_state(value, FP, SIZES, rows=1)
    with pytest.raises(ValueError, match="state object"):
        wire.load_state([1, 2], FP, SIZES)


def test_encode_refuses_bad_states():
    bad = nest()
    bad["inner"][0][0, 1] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        wire.dump_state(bad, FP, SIZES)
    with pytest.raises(ValueError, match="shape"):
        wire.dump_state(np.zeros((1, 8)), FP, SIZES)


def test_frames_json_and_back():
    frames = np.array([[0.5, -1.0], [1e-7, 123456789.0], [-0.0, 0.333333333]], np.float32)
    text = jsontext.frames_json(frames)
    assert text == "[[0.5,-1],[1e-07,1.23457e+08],[-0,0.333333]]"
    assert jsontext.frames_json(np.zeros((0, 2))) == "[]"
    assert jsontext.frames_json(np.array([[np.nan, np.inf]])) == "[[null,null]]"
    back = wire.frames_array([[0.5, -1], [1e-07, 1.23457e+08]], 2)
    assert back.dtype == np.float32 and back.shape == (2, 2)
    assert wire.frames_array([], 2).shape == (0, 2)
    with pytest.raises(ValueError, match="frames of 2 numbers"):
        wire.frames_array([[1, 2, 3]], 2)
