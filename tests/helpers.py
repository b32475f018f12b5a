"""Helpers shared by the test modules (no test module imports another)."""

import json

import keras
import numpy as np

import streamgen as sg

CELLS = ("gru", "lstm", "simple_rnn")
MODES = ("reset", "carry")


def make_model(cell="gru", decoder_state="reset", seed=1, stop_scale=20.0, **kwargs):
    """A tiny StreamGen with a sharpened stop head.

    Scaling the stop head's kernel pushes stop probabilities away from 0.5, so
    lengths cannot flip on the ~1e-6 differences oneDNN makes between batch
    sizes.
    """
    keras.utils.set_random_seed(seed)
    options = dict(input_size=3, output_size=2, ir_size=8, units=8)
    options.update(kwargs)
    model = sg.StreamGen(cell=cell, decoder_state=decoder_state, **options)
    kernel, bias = model.stop_head.get_weights()
    model.stop_head.set_weights([kernel * stop_scale, bias])
    return model


def ragged_to_lists(rt):
    """`tf.RaggedTensor (B, T, None, O)` -> [[np.ndarray (L, O)] * T] * B."""
    return [[np.asarray(out) for out in row] for row in rt.to_list()]


def assert_outputs_equal(got, expected, atol=1e-5):
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        a = np.asarray(a, np.float32).reshape(-1, 2)
        b = np.asarray(b, np.float32).reshape(-1, 2)
        assert a.shape == b.shape, f"Out[{i}]: length {len(a)} != {len(b)}"
        np.testing.assert_allclose(a, b, atol=atol, err_msg=f"Out[{i}]")


def assert_jsonl_close(got, expected, atol=1e-4):
    """Two `decode` outputs (JSON lines): the same records in the same order,
    every field but `"y"` equal, the same lengths, frames within `atol`.

    For runs that differ in batch size: the kernels' sums then differ by ~1e-6,
    which can move the printed sixth digit (seen on an AMD EPYC, not on a Xeon).
    """
    got, expected = got.splitlines(), expected.splitlines()
    assert len(got) == len(expected), (len(got), len(expected))
    for n, (a, b) in enumerate(zip(got, expected), 1):
        a, b = json.loads(a), json.loads(b)
        assert {k: v for k, v in a.items() if k != "y"} == \
            {k: v for k, v in b.items() if k != "y"}, f"line {n}"
        assert_outputs_equal(a["y"], b["y"], atol=atol)


def toy_data(n=5, seed=0, max_steps=9):
    """`n` sequences with T = 1..n and known, distinct values (input 3, output 2)."""
    rng = np.random.default_rng(seed)
    inputs = [rng.normal(size=(t + 1, 3)).astype(np.float32) for t in range(n)]
    targets = [[rng.normal(size=(int(rng.integers(0, max_steps + 1)), 2)).astype(np.float32)
                for _ in range(len(x))] for x in inputs]
    return inputs, targets


def write_toy_jsonl(path, n, seed, bad_line=None):
    """`toy_data(n, seed)` as a JSONL file of records; line `bad_line` (1-based)
    is a record of the wrong width instead. Returns the path as a str."""
    import json

    x, y = toy_data(n, seed=seed)
    with open(path, "w") as fh:
        for i, (a, b) in enumerate(zip(x, y)):
            if i + 1 == bad_line:
                fh.write('{"x": [[1, 2]], "y": [[]]}\n')
                continue
            fh.write(json.dumps({"x": a.tolist(), "y": [o.tolist() for o in b]}) + "\n")
    return str(path)


def sampling_models():
    """Tiny models whose frames can be drawn (categorical, mdn) and an mse one,
    with sharp stop heads (`stop_scale`) so that lengths vary by input."""
    return {
        "categorical": make_model("gru", "reset", seed=4, stop_scale=3.0,
                                  frame_loss="categorical", output_size=4),
        "mdn": make_model("lstm", "carry", seed=6, stop_scale=3.0, frame_loss="mdn",
                          mixtures=3, output_size=3),
        "mse": make_model("gru", "carry", seed=2, stop_scale=8.0),
    }


def export_each(models, folder, name=str):
    """`{key: path}` of each model of `models` (`{key: model}`) exported to
    LiteRT in `folder` (a `pathlib.Path`), as `name(key) + ".tflite"`."""
    paths = {}
    for key, model in models.items():
        paths[key] = str(folder / f"{name(key)}.tflite")
        model.export_litert(paths[key])
    return paths
