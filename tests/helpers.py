"""Helpers shared by the test modules (no test module imports another).

Importing this module does not import TensorFlow: tests/conftest.py imports
it in xdist's main process too, which runs no test.
"""

import collections.abc
import hashlib
import json
import os

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
    import keras

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


# Set by conftest.py (`pytest_configure`) to a folder that the run's xdist
# workers share; removed at the end of the run.
EXPORT_CACHE_ENV = "STREAMGEN_TEST_EXPORT_CACHE"


def export_litert(model, path, stop=None):
    """`model.export_litert(path, stop=stop)`, converted once per pytest run.

    For tests that export as a means, not as the subject (tests/test_export.py
    and the CLI's `export` tests convert for real): a conversion takes ~3 s,
    and several modules export the same tiny models. The file and its metadata
    are kept in the run's folder `EXPORT_CACHE_ENV` (shared by the xdist
    workers) under the digest of what decides the file: the model's config and
    weights, `stop` (classes included) and the inner-loop limit
    `UNROLL_MAX_STEPS` at the time of the call. Without that folder: a plain
    export.

    Returns:
        The metadata stored in the file, a dict.
    """
    from streamgen.runtimes import tf as tf_runtime

    folder = os.environ.get(EXPORT_CACHE_ENV)
    if not folder:
        return model.export_litert(path, stop=stop)
    digest = hashlib.sha256(json.dumps(
        [type(model).__qualname__, model.get_config(), tf_runtime.UNROLL_MAX_STEPS,
         [(type(c).__module__, type(c).__qualname__, repr(c))
          for c in (stop if isinstance(stop, (list, tuple)) else [stop])]],
        sort_keys=True, default=repr).encode())
    for variable in model.variables:
        digest.update(variable.path.encode())
        digest.update(np.asarray(variable).tobytes())
    cached = os.path.join(folder, digest.hexdigest())
    try:
        with open(cached + ".json") as fh:  # written last: the file is there
            metadata = json.load(fh)
        with open(cached + ".tflite", "rb") as fh:
            content = fh.read()
    except FileNotFoundError:
        metadata = model.export_litert(path, stop=stop)
        with open(path, "rb") as fh:
            content = fh.read()
        _write_atomically(cached + ".tflite", content)
        _write_atomically(cached + ".json", json.dumps(metadata).encode())
        return metadata
    with open(path, "wb") as fh:
        fh.write(content)
    return metadata


def _write_atomically(path, content):
    """Two workers may write the same entry at once: each renames its own copy."""
    partial = f"{path}.{os.getpid()}"
    with open(partial, "wb") as fh:
        fh.write(content)
    os.replace(partial, path)


class Exports(collections.abc.Mapping):
    """`{key: path}` of each model of `models` (`{key: model}`) exported to
    LiteRT in `folder` (a `pathlib.Path`) as `name(key) + ".tflite"`, each on
    first use (through `export_litert`): a test that reads one key converts
    one model.

    `export`: `(model, path) -> metadata`, the conversion (default
    `export_litert`).
    """

    def __init__(self, models, folder, name=str, export=None):
        self._models, self._folder, self._name = models, folder, name
        self._export = export or export_litert
        self._paths = {}

    def __getitem__(self, key):
        if key not in self._paths:
            path = str(self._folder / f"{self._name(key)}.tflite")
            self._export(self._models[key], path)
            self._paths[key] = path
        return self._paths[key]

    def __len__(self):
        return len(self._models)

    def __iter__(self):
        return iter(self._models)

