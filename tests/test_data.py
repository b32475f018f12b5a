"""Tests for `streamgen.data.dataset`: padding, STOP masks, tf.data batches (JSON Lines: test_jsonl.py)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from streamgen.quiet import import_tensorflow
from streamgen.data.dataset import (make_dataset, masks_from_lengths, pad_targets,
                            ragged_from_padded, targets_from_ragged)
from helpers import toy_data
from streamgen.data.jsonl import load_jsonl

tf = import_tensorflow()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")


def frames_of(n, start=0.0, width=2):
    """`n` distinct frames `(n, width)` float32, values start, start + 1, ..."""
    return (start + np.arange(n * width, dtype=np.float32)).reshape(n, width)


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("length, frame_mask, stop_labels, stop_mask", [
    (0, [0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]),
    (1, [1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]),
    (2, [1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0]),
    (4, [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]),  # max_steps: no STOP token
])
def test_masks_hand_worked(length, frame_mask, stop_labels, stop_mask):
    lengths = np.array([[length, 3]])
    outer = np.array([[1.0, 0.0]])  # second step is padding: all zero
    fm, sl, sm = masks_from_lengths(lengths, outer, max_steps=4)
    zero = [0, 0, 0, 0]
    for got, want in ((fm, frame_mask), (sl, stop_labels), (sm, stop_mask)):
        assert got.dtype == np.float32 and got.shape == (1, 2, 4)
        np.testing.assert_array_equal(got, [[want, zero]])
    # The tensor path gives the same numbers.
    for got, want in zip(masks_from_lengths(tf.constant(lengths), tf.constant(outer), 4), (fm, sl, sm)):
        assert got.dtype == tf.float32
        np.testing.assert_array_equal(got.numpy(), want)


def test_masks_default_max_steps_nine():
    fm, sl, sm = masks_from_lengths(np.array([0, 1, 9]), None, 9)
    np.testing.assert_array_equal(fm.sum(-1), [0, 1, 9])
    np.testing.assert_array_equal(sl.sum(-1), [1, 1, 0])
    np.testing.assert_array_equal(sm.sum(-1), [1, 2, 9])
    np.testing.assert_array_equal(np.argmax(sl, -1)[:2], [0, 1])


def test_masks_reject_out_of_range():
    with pytest.raises(ValueError, match=r"argument `lengths`, expected values in \[0, max_steps=4\], got values 0..5\.$"):
        masks_from_lengths(np.array([0, 5]), None, 4)
    with pytest.raises(ValueError, match=r"argument `max_steps`, expected an integer in \[1, 1024\], got 0\.$"):
        masks_from_lengths(np.array([0]), None, 0)


# ---------------------------------------------------------------- padding

TINY = [
    [frames_of(2), [], frames_of(3, 10)],
    [np.zeros((0, 2), np.float32)],
]


def test_pad_targets_tiny():
    frames, lengths = pad_targets(TINY, max_steps=3)
    assert frames.dtype == np.float32 and frames.shape == (2, 3, 3, 2)
    assert lengths.dtype == np.int32
    np.testing.assert_array_equal(lengths, [[2, 0, 3], [0, 0, 0]])
    want = np.zeros((2, 3, 3, 2), np.float32)
    want[0, 0, :2] = [[0, 1], [2, 3]]
    want[0, 2, :3] = [[10, 11], [12, 13], [14, 15]]
    np.testing.assert_array_equal(frames, want)


def test_ragged_round_trips():
    frames, lengths = pad_targets(TINY, max_steps=3)
    rt = ragged_from_padded(frames, lengths)
    assert isinstance(rt, tf.RaggedTensor) and rt.shape.as_list() == [2, 3, None, 2]
    assert rt.row_lengths(axis=2).numpy().tolist() == [[2, 0, 3], [0, 0, 0]]
    # A RaggedTensor is accepted wherever nested lists are.
    f2, l2 = pad_targets(rt, max_steps=3)
    np.testing.assert_array_equal(f2, frames)
    np.testing.assert_array_equal(l2, lengths)
    back = targets_from_ragged(rt)
    assert [[o.shape for o in s] for s in back] == [[(2, 2), (0, 2), (3, 2)], [(0, 2)] * 3]
    np.testing.assert_array_equal(back[0][2], TINY[0][2])
    # Ragged outer dimension too.
    rt2 = tf.ragged.constant([[[[1.0, 2.0]], []], [[]]], ragged_rank=2, inner_shape=(2,))
    assert [[o.tolist() for o in s] for s in targets_from_ragged(rt2)] == [[[[1.0, 2.0]], []], [[]]]


def test_pad_targets_errors():
    with pytest.raises(ValueError, match=r"^targets\[0\]\[2\] has 3 frames, more than max_steps=2$"):
        pad_targets(TINY, max_steps=2)
    with pytest.raises(ValueError, match=r"^targets\[1\]\[0\] has frames of width 3, but targets\[0\]\[0\] has width 2"):
        pad_targets([[frames_of(1)], [frames_of(1, width=3)]], max_steps=3)
    with pytest.raises(ValueError, match=r"^targets\[0\]\[0\] has frames of width 2, but output_size=3"):
        pad_targets([[frames_of(1)]], max_steps=3, output_size=3)
    bad = frames_of(2)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"^targets\[1\]\[1\] has a non-finite value"):
        pad_targets([[frames_of(1)], [[], bad]], max_steps=3)
    with pytest.raises(ValueError, match=r"^Received an invalid value for argument `targets\[0\]\[0\]`, expected shape \(L, output_size\), got shape \(4,\)\.$"):
        pad_targets([[np.zeros(4)]], max_steps=9)


# ---------------------------------------------------------------- make_dataset


def test_make_dataset_batch_shapes_and_values():
    inputs, targets = toy_data(5)
    ds = make_dataset(inputs, targets, batch_size=3, shuffle=False)
    batches = list(ds)
    assert len(batches) == 2
    (x, y), (x2, _) = batches
    assert x["inputs"].shape == (3, 3, 3)  # padded to T = 3, the longest in the batch
    assert x2["inputs"].shape == (2, 5, 3)  # last batch: 2 sequences, T = 5
    assert x["frames"].shape == (3, 3, 9, 2) and y["stop_mask"].shape == (3, 3, 9)
    dtypes = {k: v.dtype for k, v in {**x, **{"y_" + k: v for k, v in y.items()}}.items()}
    assert dtypes == {"inputs": tf.float32, "frames": tf.float32, "lengths": tf.int32,
                      "outer_mask": tf.float32, "y_frames": tf.float32, "y_frame_mask": tf.float32,
                      "y_stop_labels": tf.float32, "y_stop_mask": tf.float32}
    np.testing.assert_array_equal(x["outer_mask"], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    frames, lengths = pad_targets(targets, 9)
    np.testing.assert_array_equal(x["inputs"][1, :2], inputs[1])
    np.testing.assert_array_equal(x["inputs"][1, 2], [0, 0, 0])
    np.testing.assert_array_equal(x["frames"], frames[:3, :3])
    np.testing.assert_array_equal(y["frames"], frames[:3, :3])
    np.testing.assert_array_equal(x["lengths"], lengths[:3, :3])
    np.testing.assert_array_equal(x2["frames"], frames[3:])
    fm, sl, sm = masks_from_lengths(lengths[:3, :3], x["outer_mask"].numpy(), 9)
    np.testing.assert_array_equal(y["frame_mask"], fm)
    np.testing.assert_array_equal(y["stop_labels"], sl)
    np.testing.assert_array_equal(y["stop_mask"], sm)
    # Padded outer steps carry no loss at all.
    assert y["stop_mask"][0, 1:].numpy().sum() == 0 and y["frame_mask"][0, 1:].numpy().sum() == 0
    # Every real outer step has exactly one trained stop decision or is full.
    real = x["outer_mask"].numpy() > 0
    assert set(y["stop_labels"].numpy().sum(-1)[real]) <= {0.0, 1.0}
    np.testing.assert_array_equal(y["stop_labels"].numpy().sum(-1)[real] == 0, x["lengths"].numpy()[real] == 9)


def test_make_dataset_dense_inputs_and_ragged_targets():
    inputs = np.arange(24, dtype=np.float64).reshape(2, 4, 3)
    rt = tf.ragged.constant([[[[1.0, 2.0]], [], [], []], [[], [], [[3.0, 4.0], [5.0, 6.0]], []]],
                            ragged_rank=2, inner_shape=(2,))
    x, y = next(iter(make_dataset(inputs, rt, batch_size=8, shuffle=False, max_steps=2)))
    assert x["inputs"].dtype == tf.float32
    np.testing.assert_array_equal(x["inputs"], inputs)
    np.testing.assert_array_equal(x["lengths"], [[1, 0, 0, 0], [0, 0, 2, 0]])
    np.testing.assert_array_equal(x["frames"][1, 2], [[3, 4], [5, 6]])
    np.testing.assert_array_equal(y["stop_labels"][1, 2], [0, 0])  # length == max_steps


def order_of(ds):
    """First input value of every sequence, in the order the data set gives them."""
    return [row for x, _ in ds for row in x["inputs"][:, 0, 0].numpy().tolist()]


def test_make_dataset_shuffle_is_seeded():
    inputs, targets = toy_data(40)
    plain = order_of(make_dataset(inputs, targets, batch_size=8, shuffle=False))
    assert plain == [float(x[0, 0]) for x in inputs]
    a = make_dataset(inputs, targets, batch_size=8, seed=7)
    first, second = order_of(a), order_of(a)
    assert first == order_of(make_dataset(inputs, targets, batch_size=8, seed=7))
    assert sorted(first) == sorted(plain) and first != plain
    assert second != first  # reshuffled each epoch, still deterministic
    assert order_of(make_dataset(inputs, targets, batch_size=8, seed=8)) != first


@pytest.mark.parametrize("change, message", [
    (lambda i, t: (i[:4], t), r"^inputs has 4 sequences but targets has 5$"),
    (lambda i, t: (i, t[:2] + [t[2][:-1]] + t[3:]), r"^targets\[2\] has 2 outer steps, but inputs\[2\] has 3$"),
    (lambda i, t: (i[:1] + [np.zeros((0, 3))] + i[2:], t), r"^inputs\[1\] has 0 outer steps; every sequence needs T >= 1$"),
    (lambda i, t: ([np.zeros((0, 3))] * 5, [[]] * 5), r"^inputs\[0\] has 0 outer steps; every sequence needs T >= 1$"),
    (lambda i, t: (i[:3] + [np.zeros((4, 2))] + i[4:], t), r"^inputs\[3\] has width 2, but inputs\[0\] has width 3$"),
    (lambda i, t: (i, t[:3] + [t[3][:2] + [frames_of(12)] + t[3][3:]] + t[4:]),
     r"^targets\[3\]\[2\] has 12 frames, more than max_steps=9$"),
    (lambda i, t: (i[:2] + [np.where(np.arange(9).reshape(3, 3) == 7, np.inf, i[2])] + i[3:], t),
     r"^inputs\[2\]\[2\] has a non-finite value"),
    (lambda i, t: (i[:1] + [np.full((2, 3), 1e39)] + i[2:], t), r"^inputs\[1\]\[0\] has a non-finite value"),
    (lambda i, t: (i[:1] + [np.array([["a", "b", "c"]] * 2)] + i[2:], t), r"^Received an invalid value for argument `inputs\[1\]`, expected an array of numbers, got dtype <U1\.$"),
    (lambda i, t: (i, t[:4] + [5]), r"^Received an invalid value for argument `targets\[4\]`, expected a list of \(L, output_size\) arrays, got 5\.$"),
    (lambda i, t: (i, 5), r"^Received an invalid value for argument `targets`, expected a list of lists of \(L, output_size\) arrays, got 5\.$"),
    (lambda i, t: (i[:4] + [[[1, 2, 3], [1, 2]]], t), r"^Received an invalid value for argument `inputs\[4\]`, expected a rectangular \(T, input_size\) array of numbers, got \[\[1, 2, 3\], \[1, 2\]\]\.$"),
    (lambda i, t: (tf.ragged.constant([x.tolist() for x in i], ragged_rank=1), t[:4] + [[[]] * 4]),
     r"^targets\[4\] has 4 outer steps, but inputs\[4\] has 5$"),
])
def test_make_dataset_validation(change, message):
    inputs, targets = change(*toy_data(5))
    with pytest.raises(ValueError, match=message):
        make_dataset(inputs, targets)


@pytest.mark.slow  # 100k sequences (~13 s)
def test_make_dataset_100k_sequences():
    rng = np.random.default_rng(0)
    n = 100_000
    T = rng.integers(12, 21, n)
    L = rng.integers(0, 10, T.sum())
    x = rng.random((T.sum(), 3), dtype=np.float32)
    f = rng.random((L.sum(), 2), dtype=np.float32)
    inputs = np.split(x, np.cumsum(T)[:-1])
    outs = np.split(f, np.cumsum(L)[:-1])
    ends = np.cumsum(T)
    targets = [outs[e - t:e] for t, e in zip(T, ends)]
    start = time.perf_counter()
    ds = make_dataset(inputs, targets, batch_size=256, seed=0)
    built = time.perf_counter() - start
    batches = steps = 0
    for xb, _ in ds:
        batches += 1
        steps += int(xb["outer_mask"].numpy().sum())
    total = time.perf_counter() - start
    print(f"\nmake_dataset on {n} sequences ({T.sum()} outer steps, {L.sum()} frames): "
          f"built in {built:.2f} s, one epoch of {batches} batches in {total - built:.2f} s")
    assert batches == -(-n // 256) and steps == T.sum()


# ---------------------------------------------------------------- samples


def test_samples_load_and_cover_all_lengths():
    lengths = {}
    for name, count in (("train", 2000), ("valid", 300)):
        inputs, targets = load_jsonl(os.path.join(SAMPLES, f"{name}.jsonl"), max_steps=9, input_size=3,
                                     output_size=2)
        assert len(inputs) == count
        lengths[name] = np.bincount([len(o) for s in targets for o in s], minlength=10)
        assert len(lengths[name]) == 10 and lengths[name].min() >= 0.05 * lengths[name].sum()
        # The length rule of samples/README.md holds on every step.
        for x, s in zip(inputs, targets):
            k = np.rint(x[:, 0] * 9).astype(int)
            m = np.concatenate([[0], 2 * np.rint(x[:-1, 1]).astype(int)])
            assert [len(o) for o in s] == np.clip(k + m, 0, 9).tolist()
    print("\ntrain length histogram 0..9:", lengths["train"].tolist())
    assert os.path.getsize(os.path.join(SAMPLES, "train.jsonl")) < 3_000_000
    # inputs.txt: comment, 5 blank-line separated sequences of 3 numbers per line.
    with open(os.path.join(SAMPLES, "inputs.txt"), encoding="utf-8") as fh:
        text = fh.read()
    assert text.startswith("# ")
    blocks = [b for b in "\n".join(text.splitlines()[1:]).split("\n\n")]
    assert len(blocks) == 5
    for block in blocks:
        rows = np.array([[float(v) for v in line.split()] for line in block.splitlines()])
        assert rows.shape == (12, 3) and np.isfinite(rows).all()


@pytest.mark.slow
def test_make_samples_is_deterministic(tmp_path):
    subprocess.run([sys.executable, os.path.join(SAMPLES, "make_samples.py"), "--out", str(tmp_path)], check=True)
    for name in ("train.jsonl", "valid.jsonl", "inputs.txt"):
        with open(os.path.join(SAMPLES, name), "rb") as fh:
            assert (tmp_path / name).read_bytes() == fh.read(), name


# ---------------------------------------------------------------- jsonl_dataset


def batches_equal(a, b):
    a, b = list(a), list(b)
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        for key in xa:
            assert xa[key].dtype == xb[key].dtype, key
            np.testing.assert_array_equal(xa[key].numpy(), xb[key].numpy(), err_msg=key)
        for key in ya:
            np.testing.assert_array_equal(ya[key].numpy(), yb[key].numpy(), err_msg=key)
    return len(a)


def test_jsonl_dataset_equals_make_dataset(tmp_path):
    from streamgen.data.dataset import jsonl_dataset
    from streamgen.data.jsonl import save_jsonl

    inputs, targets = toy_data(23)
    path = save_jsonl(str(tmp_path / "d.jsonl"), inputs, targets)
    streamed = jsonl_dataset(path, batch_size=5)
    assert int(streamed.cardinality()) == 5  # Keras knows the epoch's length
    assert batches_equal(streamed, make_dataset(inputs, targets, 5, shuffle=False)) == 5
    # Several files, read in turn (cycle_length=1), are the same data set.
    lines = open(path).read().splitlines(keepends=True)
    for k, part in enumerate((lines[:10], lines[10:11], lines[11:])):
        (tmp_path / f"part-{k}.jsonl").write_text("".join(part))
    batches_equal(jsonl_dataset(str(tmp_path / "part-*.jsonl"), 5, cycle_length=1),
                  make_dataset(inputs, targets, 5, shuffle=False))


def test_jsonl_dataset_interleaves_and_shuffles_with_a_seed(tmp_path):
    from streamgen.data.dataset import jsonl_dataset
    from streamgen.data.jsonl import save_jsonl

    inputs, targets = toy_data(40)
    for k in range(4):
        save_jsonl(str(tmp_path / f"p{k}.jsonl"), inputs[k::4], targets[k::4])
    files = str(tmp_path / "p*.jsonl")
    plain = order_of(jsonl_dataset(files, 8))
    assert plain == [float(x[0, 0]) for x in inputs]  # 4 files interleaved = the original order
    ds = jsonl_dataset(files, 8, shuffle_buffer=16, seed=3)
    first, second = order_of(ds), order_of(ds)
    assert sorted(first) == sorted(plain) and first != plain and second != first
    assert first == order_of(jsonl_dataset(files, 8, shuffle_buffer=16, seed=3))


def test_jsonl_dataset_errors_name_file_and_line(tmp_path):
    from streamgen.data.dataset import jsonl_dataset, jsonl_error

    good = '{"x": [[1, 2, 3]], "y": [[[1, 2]]]}\n'
    a = tmp_path / "a.jsonl"
    a.write_text(good * 3)
    b = tmp_path / "b.jsonl"
    b.write_text(good + '{"x": [[1, 2, 3]], "y": [[[1, 2]], []]}\n')
    ds = jsonl_dataset([str(a), str(b)], 2)
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        list(ds)
    bad = jsonl_error(err.value)
    assert str(bad) == f"{b}:2: field 'y': 2 outer steps, but 'x' has 1"
    assert jsonl_error(RuntimeError("other")) is None
    with pytest.raises(FileNotFoundError, match="no file matches"):
        jsonl_dataset(str(tmp_path / "none-*.jsonl"))
    (tmp_path / "empty.jsonl").write_text('{"x": [[1, 2, 3]], "y": [[]]}\n')
    with pytest.raises(ValueError, match=r"empty.jsonl: no frames at all, so output_size"):
        jsonl_dataset(str(tmp_path / "empty.jsonl"))
    assert int(jsonl_dataset(str(tmp_path / "empty.jsonl"), output_size=2).cardinality()) == 1
