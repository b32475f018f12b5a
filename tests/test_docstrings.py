"""Every `>>>` example in the library's docstrings runs, with its output.

The examples share a namespace: `sg`, `np`, `keras` and `model` (a small
`sg.StreamGen(input_size=3, output_size=2)`), in a temporary folder where
`samples/` is the repository's. An example that cannot run here (a cluster
address, a user's files) says so with `# doctest: +SKIP`.
"""

import doctest
import importlib
import os
import pathlib
import pkgutil

import keras
import numpy as np
import pytest

import streamgen as sg
from helpers import make_model

ROOT = pathlib.Path(__file__).resolve().parent.parent


def library_modules():
    names = ["streamgen"]
    for info in pkgutil.walk_packages(sg.__path__, "streamgen."):
        if info.name.startswith("streamgen.cli"):
            continue
        names.append(info.name)
    return sorted(names)


def examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for name in library_modules():
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra that is not installed
            continue
        for test in finder.find(module, name):
            if test.examples and test.name not in {t.name for t in found}:
                found.append(test)
    return found


EXAMPLES = examples()


def test_there_are_examples_to_run():
    assert len(EXAMPLES) >= 10
    assert SLOW_EXAMPLES <= {t.name for t in EXAMPLES}


# Examples of ~4 s or more (a training run, a dataset over the sample files,
# LiteRT conversions): in the full run only.
SLOW_EXAMPLES = {"streamgen.training.distributed.DistributedTraining",
                 "streamgen.data.dataset.jsonl_dataset",
                 "streamgen.runtimes.export.export_litert",
                 "streamgen.runtimes.open_runtime",
                 "streamgen.stream.LiteStream"}


@pytest.mark.parametrize("test", [
    pytest.param(t, id=t.name, marks=pytest.mark.slow if t.name in SLOW_EXAMPLES else ())
    for t in EXAMPLES])
def test_docstring_example_runs(test, tmp_path, monkeypatch):
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    test.globs.update(sg=sg, np=np, keras=keras, model=make_model("gru", "reset", seed=0))
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output = []
    runner.run(test, out=output.append)
    assert runner.failures == 0, "".join(output)
    assert not os.path.exists(ROOT / "model.tflite")  # nothing written to the checkout
