"""The data-parallel loop (`streamgen.training.distributed`) and JSONL shards, without Ray."""

import json

import keras
import numpy as np
import pytest

import streamgen as sg
from streamgen.data import dataset as data_lib
from streamgen.training import distributed
from streamgen import losses
from helpers import toy_data, write_toy_jsonl


def build(seed=5, learning_rate=1e-2, **options):
    def build():
        keras.utils.set_random_seed(seed)
        model = sg.StreamGen(3, 2, ir_size=8, units=8, **options)
        return model, keras.optimizers.Adam(learning_rate)

    return build


@pytest.fixture(scope="module")
def toy():
    return toy_data(12, seed=1)


@pytest.mark.slow  # training under a distribution strategy
def test_one_replica_equals_fit(toy):
    """The default strategy: the same weights and figures as `fit` on the same batches."""
    ds = sg.make_dataset(*toy, 4, shuffle=False)
    model, optimizer = build()()
    model.compile(optimizer=optimizer)
    history = model.fit(ds, epochs=3, verbose=0, shuffle=False).history
    training, state = distributed.train_distributed(build(), lambda epoch: (ds, 3), epochs=3)
    assert [h["records"] for h in state["history"]] == [12] * 3
    for name in ("loss", "frame_loss", "stop_loss", "stop_accuracy"):
        np.testing.assert_allclose([h[name] for h in state["history"]], history[name],
                                   rtol=1e-5, err_msg=name)
    for got, expected in zip(training.model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert state["epoch"] == 3 and state["stopped"] == "epochs"


@pytest.mark.slow  # training under a distribution strategy
def test_replica_parts_add_up_to_the_global_batch(toy):
    """Halves divided by the global counts sum to the whole batch's losses (2 workers
    with batch b == 1 worker with batch 2b), and a padding batch adds nothing."""
    model = build()()[0]
    x, y = next(iter(sg.make_dataset(*toy, 12, shuffle=False)))
    whole = losses.masked_losses(y, model(x))
    halves = [next(iter(sg.make_dataset(toy[0][i:i + 6], toy[1][i:i + 6], 6, shuffle=False)))
              for i in (0, 6)]
    pad = distributed.padding_batch(model)
    counts = [losses.mask_counts(h[1]) for h in halves + [pad]]
    assert [float(c) for c in counts[2]] == [0.0, 0.0]
    total = [sum(float(c[k]) for c in counts) for k in (0, 1)]
    assert total == [float(c) for c in losses.mask_counts(y)]
    for name in ("frame_loss", "stop_loss", "stop_accuracy"):
        got = sum(float(losses.masked_losses(h[1], model(h[0]), counts=total)[name])
                  for h in halves + [pad])
        assert got == pytest.approx(float(whole[name]), rel=1e-6), name


@pytest.mark.slow  # training under a distribution strategy
def test_padding_steps_and_resume_from_state(toy):
    """A resumed run (state of epoch 1) ends where an undisturbed one does."""
    ds = sg.make_dataset(*toy, 4, shuffle=True, seed=3)
    batches = {e: list(ds) for e in range(2)}  # each epoch's order, fixed

    def dataset_fn(epoch):
        return batches[epoch], 3

    saved = {}

    def keep(training, state):
        saved[state["epoch"]] = dict(state, history=list(state["history"]),
                                     arrays=training.get_state())

    full, _ = distributed.train_distributed(build(), dataset_fn, epochs=2, on_epoch_end=keep)
    resumed, state = distributed.train_distributed(build(seed=9), dataset_fn, epochs=2,
                                                   state=saved[1])
    assert state["epoch"] == 2 and len(state["history"]) == 2
    for got, expected in zip(resumed.model.get_weights(), full.model.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.slow  # training under a distribution strategy
def test_patience_on_validation(toy):
    """With a learning rate of 0 val_loss never improves: patience 2 stops after 3 epochs."""
    ds = sg.make_dataset(*toy, 4, shuffle=False)
    _, state = distributed.train_distributed(
        build(learning_rate=0.0), lambda e: (ds, 3), epochs=6,
        validation_fn=lambda: (ds, 3), patience=2)
    values = [h["val_loss"] for h in state["history"]]
    assert state["stopped"] == "patience" and len(values) == 3
    assert values[0] == values[1] == values[2] > 0
    assert state["best"] == (0, values[0])


def write_jsonl(path, n, bad_line=None):
    return write_toy_jsonl(path, n, seed=2, bad_line=bad_line)


@pytest.mark.parametrize("files, count", [  # ~4 s each: ranges of lines in the quick run
    pytest.param(1, 2, marks=pytest.mark.slow), (1, 3), pytest.param(3, 2, marks=pytest.mark.slow),
    pytest.param(2, 2, marks=pytest.mark.slow)])
def test_shards_hold_every_record_once(tmp_path, files, count):
    paths = [write_jsonl(tmp_path / f"d{i}.jsonl", 5 + i) for i in range(files)]
    whole = [tuple(r.inputs.ravel()[:2]) for r in sg.read_records(paths)]
    seen = []
    for index in range(count):
        ds = sg.jsonl_dataset(paths, 2, shard=(index, count))
        rows = [tuple(row.ravel()[:2]) for x, _ in ds for row in
                (x["inputs"][i, :1].numpy() for i in range(len(x["inputs"])))]
        assert len(rows) == data_lib.shard_sizes(paths, count)[index]
        seen += rows
    assert sorted(seen) == sorted(whole)
    if files >= count:  # whole files
        assert data_lib.jsonl_shards(paths, count)[0][0][1:3] == (0, -1)
    unsharded = [x["inputs"].numpy() for x, _ in sg.jsonl_dataset(paths, 2)]
    assert sum(len(a) for a in unsharded) == len(whole)


@pytest.mark.parametrize("shard", [(2, 2), (-1, 2), (0, 0), "ab", (0.5, 2)])
def test_bad_shard(tmp_path, shard):
    path = write_jsonl(tmp_path / "d.jsonl", 3)
    with pytest.raises(ValueError, match="argument `shard`"):
        sg.jsonl_dataset(path, 2, shard=shard)


@pytest.mark.slow  # training under a distribution strategy
def test_malformed_record_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", 8, bad_line=6)
    ds = sg.jsonl_dataset(path, 2, shard=(1, 2))  # lines 5-8

    with pytest.raises(distributed.DataError, match=rf"^{path}:6: "):
        distributed.train_distributed(build(), lambda e: (ds, 2), epochs=1)
