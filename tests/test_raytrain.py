"""Training on the session's Ray cluster (`streamgen.training.ray`, `streamgen train --ray`).

Each test here but the last starts a Ray Train worker group (TensorFlow
imported in every worker): slow. They share the session cluster
(`ray_cluster`, 2 CPUs). The last checks our backend (`TF_CONFIG`) alone.
"""

import json
import os
import re
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import streamgen as sg
from streamgen.training import distributed
from streamgen.training import ray as raytrain
from streamgen.cli.main import cli
from helpers import toy_data, write_toy_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.ray]

OPTIONS = dict(units=8, ir_size=8)


def write_jsonl(path, n, bad_line=None):
    return write_toy_jsonl(path, n, seed=4, bad_line=bad_line)


def test_two_workers_survive_a_kill_and_equal_one_worker_with_the_global_batch(
        ray_cluster, tmp_path):
    """2 workers with batch 2 each (global 4), rank 1 killed (SIGKILL) after epoch 2 of 3:
    Ray Train restarts the group from the last checkpoint (epoch 1's or 2's: the
    controller may not have collected epoch 2's report from the dead worker), and
    the model equals one process trained with batch 4 on the same records in the
    same order."""
    path = write_jsonl(tmp_path / "d.jsonl", 16)  # one file: lines 1-8 | 9-16
    out, marker = str(tmp_path / "m.keras"), str(tmp_path / "killed")

    def hook(rank, epoch):
        if rank == 1 and epoch == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

    events = []
    result = raytrain.train_on_ray(
        path, out, workers=2, epochs=3, batch_size=4, learning_rate=1e-2, seed=7,
        shuffle_buffer=0, max_failures=1, storage_path=str(tmp_path / "ray"),
        on_epoch=events.append, _worker_hook=hook, **OPTIONS)
    assert os.path.exists(marker)
    resumed = [e["resumed"] for e in events if "resumed" in e]
    assert len(resumed) == 1 and resumed[0] in (1, 2)
    assert [h["records"] for h in result["history"]] == [16, 16, 16]
    assert result["stopped"] == "epochs" and result["saved"]

    # The reference: global batch k = rank 0's batch k + rank 1's batch k.
    x, y = toy_data(16, seed=4)
    order = [i for k in range(4) for i in (2 * k, 2 * k + 1, 8 + 2 * k, 9 + 2 * k)]
    ds = sg.make_dataset([x[i] for i in order], [y[i] for i in order], 4, shuffle=False)

    def build():
        keras.utils.set_random_seed(7)
        return (sg.StreamGen(input_size=3, output_size=2, **OPTIONS),
                keras.optimizers.Adam(1e-2))

    reference, state = distributed.train_distributed(build, lambda e: (ds, 4), epochs=3)
    np.testing.assert_allclose([h["loss"] for h in result["history"]],
                               [h["loss"] for h in state["history"]], rtol=1e-5)
    got = keras.models.load_model(out, compile=False)
    for a, b in zip(got.get_weights(), reference.model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cli_bad_record_stops_every_worker_with_one_line(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    path = write_jsonl(tmp_path / "d.jsonl", 12, bad_line=10)  # in rank 1's share
    out = str(tmp_path / "m.keras")
    result = CliRunner().invoke(
        cli, ["train", path, "--ray", "--workers", "2", "--epochs", "2", "--batch-size", "4",
              "--units", "8", "--ir-size", "8", "--seed", "0", "-o", out],
        catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"streamgen: error: {path}:10: ")
    assert result.stderr.count("\n") == 1
    assert not os.path.exists(out)
    # the run's shorter poll of its workers (0.5 s) does not outlive it
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" not in os.environ


def test_backend_writes_tf_config_and_keeps_tensorflow_out_of_the_controller(monkeypatch):
    """Ray Train's controller unpickles our backend config (not Ray's
    `TensorflowConfig`, whose package imports TensorFlow): nothing of it
    imports TensorFlow. On the workers it writes `TF_CONFIG`, every worker at
    127.0.0.1 on a loopback cluster, each task by its index."""
    import ray

    blob = ray.cloudpickle.dumps(raytrain._backend_config(True))
    code = ("import pickle, sys\n"
            "config = pickle.loads(sys.stdin.buffer.read())\n"
            "config.backend_cls\n"
            "print('tensorflow' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True,
                            timeout=120)
    assert (result.returncode, result.stdout) == (0, b"False\n"), result.stderr[-2000:]

    addresses = [raytrain._free_address(True) for _ in range(2)]
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in addresses)
    monkeypatch.setenv("TF_CONFIG", "")  # so that the one written below is undone after the test
    raytrain._set_tf_config(addresses, 1)
    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": addresses}, "task": {"type": "worker", "index": 1}}
