"""Tests for `streamgen.data.ragged`: the flat form, its checks, and no TensorFlow."""

import subprocess
import sys

import numpy as np
import pytest

from streamgen.data import ragged
from streamgen.quiet import import_tensorflow

tf = import_tensorflow()


def test_offsets_locate_split():
    counts = np.array([2, 0, 3])
    assert ragged.offsets(counts).tolist() == [0, 2, 2]
    assert [ragged.locate(i, counts) for i in range(5)] == [(0, 0), (0, 1), (2, 0), (2, 1),
                                                            (2, 2)]
    pieces = ragged.split(np.arange(5), counts)
    assert [p.tolist() for p in pieces] == [[0, 1], [], [2, 3, 4]]
    assert ragged.split(np.arange(0), np.array([], np.int64)) == []


def test_step_frames_places_each_frame_in_its_slot():
    lengths = np.array([2, 0, 1])
    frames = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = ragged.step_frames(lengths, frames, max_steps=3)
    assert out.shape == (3, 3, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [[0, 1], [2, 3], [0, 0]])
    np.testing.assert_array_equal(out[1], np.zeros((3, 2)))
    np.testing.assert_array_equal(out[2], [[4, 5], [0, 0], [0, 0]])


@pytest.mark.parametrize("form", ["lists", "dense", "ragged"])
def test_flatten_inputs_forms_agree(form):
    sequences = [np.arange(6, dtype=np.float32).reshape(2, 3),
                 np.arange(6, 12, dtype=np.float32).reshape(2, 3)]
    value = {"lists": sequences, "dense": np.stack(sequences),
             "ragged": tf.ragged.constant([s.tolist() for s in sequences], ragged_rank=1)}[form]
    flat = ragged.flatten_inputs(value)
    assert flat.steps.tolist() == [2, 2] and flat.rows.dtype == np.float32
    np.testing.assert_array_equal(flat.rows, np.arange(12).reshape(4, 3))


def test_flatten_targets_lists_and_ragged_agree():
    targets = [[np.ones((2, 2)), []], [np.zeros((0, 2)), np.full((1, 2), 7.0)]]
    flat = ragged.flatten_targets(targets)
    assert flat.steps.tolist() == [2, 2] and flat.lengths.tolist() == [2, 0, 0, 1]
    np.testing.assert_array_equal(flat.frames, [[1, 1], [1, 1], [7, 7]])
    rt = tf.ragged.constant([[[[1.0, 1.0], [1.0, 1.0]], []], [[], [[7.0, 7.0]]]],
                            ragged_rank=2, inner_shape=(2,))
    flat2 = ragged.flatten_targets(rt)
    for a, b in zip(flat, flat2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("inputs, message", [
    ([], r"^inputs is empty; need at least one sequence$"),
    ([np.zeros((2, 3)), np.zeros((0, 3))],
     r"^inputs\[1\] has 0 outer steps; every sequence needs T >= 1$"),
    ([np.zeros((2, 3)), np.zeros((2, 4))], r"^inputs\[1\] has width 4, but inputs\[0\] has width 3$"),
    ([np.zeros((2, 3)), [[1, 2, 3], [1, 2]]],
     r"^Received an invalid value for argument `inputs\[1\]`, expected a rectangular "
     r"\(T, input_size\) array of numbers, got \[\[1, 2, 3\], \[1, 2\]\]\.$"),
    (5, r"^Received an invalid value for argument `inputs`, expected a list of "
        r"\(T, input_size\) arrays, got 5\.$"),
    (np.zeros((2, 3)), r"^Received an invalid value for argument `inputs`, expected a list "
                       r"of \(T, input_size\) arrays or one \(N, T, input_size\) array of "
                       r"numbers, got an array of shape \(2, 3\), dtype float64\.$"),
    ([np.array([[1.0, np.nan, 0.0]])], r"^inputs\[0\]\[0\] has a non-finite value"),
])
def test_flatten_inputs_errors(inputs, message):
    with pytest.raises(ValueError, match=message):
        ragged.flatten_inputs(inputs)


def test_checks_name_sequence_and_step():
    x = ragged.flatten_inputs([np.zeros((2, 3)), np.zeros((3, 3))])
    y = ragged.flatten_targets([[[], []], [[], np.zeros((12, 2)), []]])
    with pytest.raises(ValueError, match=r"^targets\[1\]\[1\] has 12 frames, more than max_steps=9$"):
        ragged.check_lengths(y, 9)
    ragged.check_pair(x, y)
    with pytest.raises(ValueError, match=r"^targets\[0\] has 1 outer steps, but inputs\[0\] has 2$"):
        ragged.check_pair(x, ragged.flatten_targets([[[]], [[], [], []]], output_size=2))
    with pytest.raises(ValueError, match=r"^inputs has 2 sequences but targets has 1$"):
        ragged.check_pair(x, ragged.flatten_targets([[[], []]], output_size=2))
    with pytest.raises(ValueError, match="no frames at all"):
        ragged.flatten_targets([[[]]])
    assert ragged.flatten_targets([[[]]], need_width=False).frames.shape == (0, 0)


@pytest.mark.slow
def test_ragged_and_jsonl_do_not_import_tensorflow():
    code = ("import sys, numpy as np; import streamgen.data.ragged as r, streamgen.data.jsonl, "
            "streamgen.offline.decode; r.flatten_inputs([np.zeros((1, 3))]); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout == "False\n"
