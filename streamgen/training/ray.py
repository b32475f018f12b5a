"""Training on a Ray cluster with Ray Train (`streamgen train --ray`).

`train_on_ray` runs `streamgen.training.distributed.train_distributed` on `workers`
Ray Train workers (`TensorflowTrainer`, with our own backend writing
`TF_CONFIG` for `tf.distribute.MultiWorkerMirroredStrategy`: see
`_backend_config`). Each worker streams its own
share of the JSONL files through `sg.jsonl_dataset(..., shard=(rank,
workers))`: whole files when there are at least as many files as workers,
else ranges of lines; no record is read twice in an epoch. `batch_size` is
the global batch, each worker's batch times `workers`: the same options
train like a local run.

After every epoch rank 0 writes a checkpoint (weights, optimizer, history)
through `ray.train.report`; a worker that dies is restarted with the others
(`FailureConfig(max_failures)`) and the run resumes from the last
checkpoint, reading each later epoch as the undisturbed run would. Rank 0
writes the model of the best validation loss (without a validation file:
the last epoch's) to `output` atomically, so an interrupted run leaves the
best model so far.

The files (`paths`, `valid`, `output`, `storage_path`) must be at the same
paths on every node: one machine, or a shared filesystem. Needs
`ray[train]` (the `serve` extra).
"""

import json
import logging
import os
import random
import signal
import socket
import tempfile
import threading
import warnings

from streamgen import checks
from streamgen.data import jsonl

__all__ = ["train_on_ray"]

_SEED_RANGE = 2**31 - 1
# How often Ray Train's controller polls its workers, unless the user set it:
# a run's end and a dead worker are noticed within it (Ray's default, 2 s,
# adds ~2 s to every run and to every restart). Read by `fit` from the driver's
# environment and passed on to the controller and the workers.
_HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
_HEALTH_CHECK_INTERVAL_S = "0.5"


def train_on_ray(paths, output, *, valid=None, address=None, workers=2, epochs=10,
                 batch_size=32, learning_rate=1e-3, seed=None, patience=None,
                 shuffle_buffer=10_000, max_failures=2, storage_path=None,
                 cpus_per_worker=1, on_epoch=None, _worker_hook=None, **model_options):
    """Trains a `StreamGen` on `workers` Ray Train workers, data-parallel.

    Args:
        paths: JSONL files or glob patterns (as `sg.jsonl_dataset`).
        output: path of the `.keras` file to write (atomically, by rank 0).
        valid: optional validation JSONL file: the model of the best
            `val_loss` is kept.
        address: the cluster (`"auto"`, `"host:port"`, `"ray://host:port"`);
            None: a new local cluster on 127.0.0.1, shut down after. If Ray
            is already initialized, that cluster is used.
        workers: int, Ray Train workers (one replica each).
        epochs, patience: as `streamgen train` (patience on `val_loss`, or
            on `loss` without `valid`).
        batch_size: int, the GLOBAL batch: sequences per step, all workers
            together (each worker's batch is `batch_size / workers`, so it
            must divide). The same value trains like a local run.
        learning_rate: float, Adam's.
        seed: int or None: weights and shuffling (None: drawn once here,
            so that every worker starts from the same weights).
        shuffle_buffer: int, records shuffled per worker (0: file order).
        max_failures: int, worker-group restarts before the run fails.
        storage_path: folder for Ray Train's checkpoints (default: a
            temporary folder, removed after; on a multi-node cluster, a
            shared one).
        cpus_per_worker: int, CPUs each worker reserves (and TensorFlow's
            threads).
        on_epoch: optional `(logs) -> None`, on the driver after each epoch:
            the epoch's figures (`"epoch"` 1-based, `"loss"`, ...,
            `"records_per_s"`), or `{"resumed": epoch}` after a restart.
        **model_options: `sg.StreamGen` options (`units`, `ir_size`,
            `cell`, `max_steps`, `decoder_state`, `frame_loss`, `stop`,
            `stop_loss_weight`, `stop_pos_weight`); `input_size` and
            `output_size` are read from the data.

    Returns:
        dict: `"history"` (the logs of every epoch), `"best"` (`(epoch,
        val_loss)`, 0-based, with `valid`), `"stopped"` (`"epochs"`,
        `"patience"` or `"diverged"`), `"saved"` (whether `output` was
        written).

    Raises:
        ValueError: a bad option, or a malformed record (its
            `"path:line: what"`; every worker has stopped).
        KeyboardInterrupt: Ctrl-C (every worker stopped; `output` holds the
            best model so far, if any).
        RuntimeError: the run failed on the workers (`max_failures` spent).
    """
    import ray

    workers = checks.positive_int("workers", workers)
    batch_size = checks.positive_int("batch_size", batch_size)
    if batch_size % workers:
        raise ValueError(
            f"Received an invalid value for argument `batch_size`, expected a multiple of "
            f"workers={workers} (the global batch, split over the workers), got {batch_size}.")
    epochs = checks.positive_int("epochs", epochs)
    max_failures = checks.check_count("max_failures", max_failures)
    cpus_per_worker = checks.positive_int("cpus_per_worker", cpus_per_worker)
    if patience is not None:
        patience = checks.positive_int("patience", patience)
    files = [os.path.abspath(p) for p in jsonl.expand_paths(paths)]
    max_steps = model_options.get("max_steps", 9)
    widths = jsonl.peek_widths(files, max_steps=max_steps)
    output = os.path.abspath(output)
    if not os.path.isdir(os.path.dirname(output)):
        raise checks.invalid("output", "a path in an existing folder", output)
    if valid is not None:
        valid = os.path.abspath(valid)
        jsonl.peek_widths([valid], max_steps=max_steps, input_size=widths.size["x"],
                          output_size=widths.size["y"])
    if seed is None:
        seed = random.SystemRandom().randrange(_SEED_RANGE)
    config = {
        "files": files, "valid": valid, "output": output, "epochs": epochs,
        "batch_size": batch_size // workers, "learning_rate": float(learning_rate), "seed": int(seed),
        "patience": patience, "shuffle_buffer": shuffle_buffer, "cpus": cpus_per_worker,
        "model": dict(model_options, input_size=widths.size["x"],
                      output_size=widths.size["y"]),
        "hook": _worker_hook,
    }

    started = not ray.is_initialized()
    if started:
        _init(ray, address, workers * cpus_per_worker)
    temporary = None
    try:
        for name in ("ray", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)
        loopback = all(node.get("NodeManagerAddress") == "127.0.0.1"
                       for node in ray.nodes() if node.get("Alive"))
        if storage_path is None:
            temporary = tempfile.TemporaryDirectory(prefix="streamgen-train-")
            storage_path = temporary.name
        return _fit(ray, config, workers, max_failures, os.path.abspath(storage_path),
                    on_epoch, loopback)
    finally:
        if temporary is not None:
            temporary.cleanup()
        if started:
            ray.shutdown()


def _init(ray, address, cpus):
    """`ray.init`: a new local cluster on 127.0.0.1 (`address=None`), or `address`.

    A local cluster is tried twice: on a loaded machine its raylet can miss
    Ray's 30 s registration window.

    Raises:
        RuntimeError: Ray could not start or connect, in one line.
    """
    local = address is None
    for attempt in (1, 2):
        try:
            ray.init(address="local" if local else address, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR, configure_logging=True,
                     **({"_node_ip_address": "127.0.0.1", "num_cpus": cpus} if local else {}))
            return
        except Exception as error:  # Ray raises plain `Exception`s here
            if ray.is_initialized():
                ray.shutdown()
            if not local or attempt == 2:
                where = "start a local Ray cluster" if local else f"connect to {address!r}"
                raise RuntimeError(f"could not {where}: {_first_line(error)}") from None


def _fit(ray, config, workers, max_failures, storage_path, on_epoch, loopback):
    """Runs the trainer; relays the workers' messages to `on_epoch`.
    `loopback`: every node of the cluster is at 127.0.0.1 (`_backend_config`)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer  # imports TensorFlow (the driver only)
    from ray.util.queue import Empty, Queue

    messages = Queue(actor_options={"num_cpus": 0})
    config["queue"] = messages
    received = {"error": None, "done": None}

    def handle(message):
        kind, body = message
        if kind == "error":
            received["error"] = received["error"] or body
        elif kind == "done":
            received["done"] = body
        elif on_epoch is not None:
            on_epoch(body)

    stop = threading.Event()

    def relay():
        while not stop.is_set():
            try:
                handle(messages.get(timeout=0.2))
            except Empty:
                continue
            except Exception:  # the queue's actor is gone: the run is over
                return

    thread = threading.Thread(target=relay, daemon=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        trainer = TensorflowTrainer(
            _worker_loop, train_loop_config=config,
            tensorflow_config=_backend_config(loopback),
            scaling_config=ScalingConfig(num_workers=workers,
                                         resources_per_worker={"CPU": config["cpus"]}),
            run_config=RunConfig(
                name=f"streamgen-train-{os.getpid()}-{random.randrange(10**6)}",
                storage_path=storage_path,
                failure_config=FailureConfig(max_failures=max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2)))
    handler = signal.getsignal(signal.SIGINT)
    thread.start()
    user_interval = os.environ.get(_HEALTH_CHECK_ENV)
    try:
        if user_interval is None:
            os.environ[_HEALTH_CHECK_ENV] = _HEALTH_CHECK_INTERVAL_S
        trainer.fit()  # Ray Train's own Ctrl-C handler aborts every worker
    except (SystemExit, ray.exceptions.RayActorError):
        raise KeyboardInterrupt from None
    except ray.train.TrainingFailedError as error:
        raise RuntimeError(f"training failed on the Ray workers: {_first_line(error)}") \
            from None
    finally:
        if user_interval is None:
            os.environ.pop(_HEALTH_CHECK_ENV, None)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)
        stop.set()
        thread.join()
        while True:  # what the relay had not fetched yet
            try:
                handle(messages.get_nowait())
            except Exception:
                break
        ray.kill(messages.actor)
    if received["error"] is not None:
        raise ValueError(received["error"])
    if received["done"] is None:
        raise RuntimeError("training ended on the Ray workers without a result")
    return received["done"]


def _first_line(error):
    text = str(error).strip()
    for line in reversed(text.splitlines()):
        if line.strip() and not line.startswith(" "):
            return line.strip()
    return text


# ---------------------------------------------------------------------- #
# On each worker.
# ---------------------------------------------------------------------- #
def _backend_config(loopback):
    """Ray Train's backend for our workers: `TF_CONFIG` for
    `MultiWorkerMirroredStrategy`, each worker at its node's address and a
    free port (127.0.0.1 on a `loopback` cluster, where Ray would write the
    machine's own address).

    In place of Ray's `TensorflowConfig`, which writes the same `TF_CONFIG`
    but imports TensorFlow into Ray Train's controller (its package imports
    it): ~7 s of CPU on the path of every run's start and of every restart of
    the workers.
    """
    from ray.train.backend import Backend, BackendConfig

    class TFConfigBackend(Backend):
        def on_start(self, worker_group, backend_config):
            import ray

            addresses = worker_group.execute(_free_address, loopback)
            ray.get([worker_group.execute_single_async(i, _set_tf_config, addresses, i)
                     for i in range(len(worker_group))])

    class TFConfig(BackendConfig):
        @property
        def backend_cls(self):
            return TFConfigBackend

    return TFConfig()


def _free_address(loopback):
    """On a worker: `"host:port"`, a port free on this node now."""
    import ray

    host = "127.0.0.1" if loopback else ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def _set_tf_config(addresses, index):
    """On the worker `addresses[index]`: `TF_CONFIG` naming every worker."""
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": list(addresses)},
                                          "task": {"type": "worker", "index": index}})


def _worker_loop(config):
    """Ray Train's `train_loop_per_worker`: `train_distributed` on one worker."""
    import ray.train

    from streamgen.quiet import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(config["cpus"])
    tf.config.threading.set_inter_op_parallelism_threads(config["cpus"])
    import keras
    import numpy as np

    from streamgen.data import dataset as data_lib
    from streamgen.model import StreamGen
    from streamgen.training import distributed

    context = ray.train.get_context()
    rank, count = context.get_world_rank(), context.get_world_size()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    queue = config["queue"]
    batch_size, seed = config["batch_size"], config["seed"]
    max_steps = config["model"].get("max_steps", 9)

    def build():
        keras.utils.set_random_seed(seed)
        model = StreamGen(**config["model"])
        return model, keras.optimizers.Adam(config["learning_rate"])

    train_steps = distributed.steps_for(data_lib.shard_sizes(config["files"], count),
                                        batch_size)

    def dataset_fn(epoch):
        ds = data_lib.jsonl_dataset(config["files"], batch_size,
                              shuffle_buffer=config["shuffle_buffer"],
                              seed=(seed * 1_000_003 + epoch * 1009 + rank) % 2**31,
                              max_steps=max_steps, shard=(rank, count))
        return ds, train_steps

    validation_fn = None
    if config["valid"] is not None:
        val_steps = distributed.steps_for(data_lib.shard_sizes([config["valid"]], count),
                                          batch_size)

        def validation_fn():
            return data_lib.jsonl_dataset([config["valid"]], batch_size, max_steps=max_steps,
                                          shard=(rank, count)), val_steps

    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            with open(os.path.join(folder, "state.json")) as fh:
                state = json.load(fh)
            with np.load(os.path.join(folder, "arrays.npz")) as arrays:
                n = state.pop("weights")
                values = [arrays[f"a{i}"] for i in range(len(arrays.files))]
            state["arrays"] = {"weights": values[:n], "optimizer": values[n:]}
        if state["best"] is not None:
            state["best"] = tuple(state["best"])
        if rank == 0:
            queue.put(("resumed", {"resumed": state["epoch"]}))

    saved = {"any": False}

    def on_epoch_end(training, state):
        logs = dict(state["history"][-1], epoch=state["epoch"])
        logs["records_per_s"] = logs["records"] / logs["seconds"] if logs["seconds"] else 0.0
        metrics = {k: float(v) for k, v in logs.items()}
        if rank != 0:
            ray.train.report(metrics)
        else:
            if state["stopped"] != "diverged" and (
                    state["improved"] if validation_fn is not None else True):
                _save(training.model, config["output"], config["learning_rate"])
                saved["any"] = True
                logs["saved"] = True
            queue.put(("epoch", logs))
            arrays = training.get_state()
            kept = {k: state[k] for k in ("epoch", "history", "best", "wait")}
            kept["weights"] = len(arrays["weights"])
            with tempfile.TemporaryDirectory() as folder:
                with open(os.path.join(folder, "state.json"), "w") as fh:
                    json.dump(kept, fh)
                np.savez(os.path.join(folder, "arrays.npz"),
                         **{f"a{i}": a for i, a in
                            enumerate(arrays["weights"] + arrays["optimizer"])})
                ray.train.report(metrics,
                                 checkpoint=ray.train.Checkpoint.from_directory(folder))
        if config["hook"] is not None:
            config["hook"](rank, state["epoch"])

    try:
        _, state = distributed.train_distributed(
            build, dataset_fn, strategy=strategy, epochs=config["epochs"],
            validation_fn=validation_fn, patience=config["patience"], state=state,
            on_epoch_end=on_epoch_end)
    except distributed.DataError as error:
        if not str(error).startswith("stopped:"):
            queue.put(("error", str(error)))
        return  # every worker stops at the same step; not a failure to retry
    if rank == 0:
        queue.put(("done", {"history": state["history"], "best": state["best"],
                            "stopped": state["stopped"],
                            "saved": saved["any"]}))


def _save(model, path, learning_rate):
    """Writes `model` (built under a strategy) as a plain `.keras` file, atomically."""
    import keras

    from streamgen import saving
    from streamgen.model import StreamGen
    from streamgen.training import distributed

    plain = StreamGen.from_config(model.get_config())
    plain(distributed.padding_batch(plain)[0])
    plain.set_weights(model.get_weights())
    plain.compile(optimizer=keras.optimizers.Adam(learning_rate))
    saving.save_model(plain, path)
