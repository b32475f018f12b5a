"""Data-parallel training under a `tf.distribute` strategy, without `fit`.

Keras 3's `fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585), so multi-worker training (`streamgen.training.ray`)
runs this custom loop: the model and its optimizer are built in
`strategy.scope()`, and one `tf.function` step, run with `strategy.run`,
computes the losses of `fit` with the same functions (`streamgen.losses.masked_losses`
and `streamgen.losses.total_loss`), takes the gradients and lets the optimizer
all-reduce and apply them.

The loss of a replica is its own masked sums divided by the mask counts of
the GLOBAL batch (the counts are summed over the replicas first, in one
small all-reduce that also carries the figures of the step). The replicas'
losses then add up to the loss of the global batch, exactly what `fit`
computes on that batch, and so do their gradients (the optimizer sums
them). One worker with batch `b` equals `fit` with batch `b`; `N` workers
with batch `b` each equal one worker with batch `N * b` on the same records.

Every worker must run the same number of steps (a collective waits for all
replicas): an epoch runs `max` over the workers of their batch counts, and a
worker whose share is used up feeds a padding batch, whose masks are zero,
so that it adds nothing to the loss nor to the gradients. A malformed
record is handled the same way: its worker feeds a padding batch with a
flag that the step's all-reduce carries, and every worker stops after that
step (`DataError`).

One replica per worker (a CPU worker, or one accelerator): the default
strategy, `OneDeviceStrategy` and `MultiWorkerMirroredStrategy` with one
device per worker.
"""

import math
import time

import keras
import numpy as np

from streamgen.data import dataset as data_lib
from streamgen import losses
from streamgen.quiet import import_tensorflow

tf = import_tensorflow()

__all__ = ["DataError", "DistributedTraining", "train_distributed", "padding_batch",
           "batch_spec"]

# The figures each replica contributes to a step's all-reduce.
_STATS = ("frame_count", "stop_count", "records", "bad", "frame_sum", "stop_sum", "correct")
_INDEX = {name: i for i, name in enumerate(_STATS)}


class DataError(ValueError):
    """A malformed record met by one of the workers; every worker stops.

    `str(error)` is `"{path}:{line}: {what}"` on the worker that met it.
    """


def batch_spec(model):
    """The `(x, y)` `tf.TensorSpec`s of a batch for `model` (any `B` and `T`).

    Args:
        model: a `StreamGen` (its `input_size`, `output_size`, `max_steps`).

    Returns:
        A pair of dicts of `tf.TensorSpec`, as `sg.make_dataset` yields.
    """
    M, I, O = model.max_steps, model.input_size, model.output_size
    frames = tf.TensorSpec([None, None, M, O], tf.float32)
    step = tf.TensorSpec([None, None, M], tf.float32)
    x = {"inputs": tf.TensorSpec([None, None, I], tf.float32), "frames": frames,
         "lengths": tf.TensorSpec([None, None], tf.int32),
         "outer_mask": tf.TensorSpec([None, None], tf.float32)}
    y = {"frames": frames, "frame_mask": step, "stop_labels": step, "stop_mask": step}
    return x, y


def padding_batch(model):
    """A batch of one sequence of one step whose masks are all zero.

    It adds nothing to a step's losses, counts or gradients: a worker with
    no records left feeds it so that its step still meets the others'.
    """
    return tf.nest.map_structure(
        lambda spec: tf.zeros([1, 1] + spec.shape.as_list()[2:], spec.dtype), batch_spec(model))


class DistributedTraining:
    """A `StreamGen` and its optimizer under a strategy, and their steps.

    Args:
        build: a function `() -> (model, optimizer)`, called in
            `strategy.scope()`: a `StreamGen` (not compiled) and a Keras
            optimizer. Seed the weights inside it (`keras.utils.set_random_seed`)
            so that every worker starts from the same ones.
        strategy: a `tf.distribute.Strategy` with one replica per worker;
            default: the current one (`tf.distribute.get_strategy()`).

    Attributes:
        model, optimizer, strategy.

    Example:

    >>> from streamgen.training import distributed
    >>> def build():
    ...     return sg.StreamGen(3, 2, units=8), keras.optimizers.Adam(1e-3)
    >>> training = distributed.DistributedTraining(build)
    >>> logs = training.run_epoch(sg.jsonl_dataset("samples/valid.jsonl", 32), steps=2)
    >>> logs["records"], logs["steps"]
    (64, 2)
    """

    def __init__(self, build, strategy=None):
        self.strategy = strategy or tf.distribute.get_strategy()
        with self.strategy.scope():
            self.model, self.optimizer = build()
            self.model(padding_batch(self.model)[0])  # creates the weights
            self.optimizer.build(self.model.trainable_variables)
        x, y = batch_spec(self.model)
        signature = [x, y, tf.TensorSpec([], tf.float32)]
        # One trace each, the same on every worker (the collectives of
        # different traces would not meet).
        self._train = tf.function(self._train_step, input_signature=signature)
        self._evaluate = tf.function(self._evaluate_step, input_signature=signature)
        self._padding = padding_batch(self.model)

    # ------------------------------------------------------------------ #
    # Steps.
    # ------------------------------------------------------------------ #
    def _local_stats(self, x, y, y_pred, bad):
        """This replica's sums and counts, `(len(_STATS),)`."""
        model = self.model
        frame_count, stop_count = losses.mask_counts(y)
        sums = losses.masked_losses(  # divided by 1: the sums themselves
            y, y_pred, frame_loss=model.frame_loss, stop_pos_weight=model.stop_pos_weight,
            counts=(tf.constant(1.0), tf.constant(1.0)))
        records = tf.reduce_sum(tf.cast(x["outer_mask"][:, 0] > 0, tf.float32))
        return tf.stop_gradient(tf.stack([
            frame_count, stop_count, records, bad,
            sums["frame_loss"], sums["stop_loss"], sums["stop_accuracy"]]))

    def _replica_train(self, x, y, bad):
        model = self.model
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            stats = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                       self._local_stats(x, y, y_pred, bad))
            parts = losses.masked_losses(
                y, y_pred, frame_loss=model.frame_loss, stop_pos_weight=model.stop_pos_weight,
                counts=(stats[_INDEX["frame_count"]], stats[_INDEX["stop_count"]]))
            replicas = float(context.num_replicas_in_sync)
            loss = losses.total_loss(parts, model.stop_loss_weight,
                                        [tf.reduce_sum(r) / replicas for r in model.losses])
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))  # all-reduced (summed)
        return stats

    def _replica_evaluate(self, x, y, bad):
        context = tf.distribute.get_replica_context()
        y_pred = self.model(x, training=False)
        return context.all_reduce(tf.distribute.ReduceOp.SUM,
                                  self._local_stats(x, y, y_pred, bad))

    def _train_step(self, x, y, bad):
        return self.strategy.run(self._replica_train, args=(x, y, bad))

    def _evaluate_step(self, x, y, bad):
        return self.strategy.run(self._replica_evaluate, args=(x, y, bad))

    # ------------------------------------------------------------------ #
    # Epochs.
    # ------------------------------------------------------------------ #
    def run_epoch(self, batches, steps, train=True, on_step=None):
        """Runs `steps` steps over `batches` (this worker's), training or not.

        Args:
            batches: an iterable of `(x, y)` batches (a `tf.data.Dataset`),
                this worker's share; padding batches follow when it ends
                before `steps`.
            steps: int, the steps of every worker (`max` of their batch
                counts).
            train: bool, train (`True`) or only evaluate.
            on_step: optional `(step, logs) -> None`, after each step.

        Returns:
            dict: `"loss"`, `"frame_loss"`, `"stop_loss"` (means over the
            global batches, weighted by their records, as `fit` reports
            them), `"stop_accuracy"`, `"records"` (global), `"steps"` (run),
            `"seconds"` and `"diverged"` (the step whose loss was not
            finite, where training stopped, or None).

        Raises:
            DataError: a worker met a malformed record (on that worker: its
                `"path:line: what"`).
        """
        step_fn = self._train if train else self._evaluate
        iterator = iter(batches)
        totals = np.zeros(len(_STATS), np.float64)
        weighted = {"loss": 0.0, "frame_loss": 0.0, "stop_loss": 0.0}
        diverged, done, started = None, 0, time.monotonic()
        for step in range(steps):
            bad, message = 0.0, None
            try:
                x, y = next(iterator)
            except StopIteration:
                x, y = self._padding
            except (tf.errors.OpError, ValueError) as error:
                found = data_lib.jsonl_error(error)
                if found is None:
                    raise
                (x, y), bad, message = self._padding, 1.0, str(found)
            stats = self.strategy.experimental_local_results(
                step_fn(x, y, tf.constant(bad)))[0].numpy().astype(np.float64)
            done += 1
            if stats[_INDEX["bad"]] > 0:
                raise DataError(message or "stopped: another worker met a malformed record")
            parts = self._parts(stats)
            totals += stats
            for name in weighted:
                weighted[name] += parts[name] * stats[_INDEX["records"]]
            if on_step is not None:
                on_step(step, parts)
            if train and not math.isfinite(parts["loss"]):
                diverged = step
                break
        records = totals[_INDEX["records"]]
        logs = {name: value / records if records else 0.0 for name, value in weighted.items()}
        logs["stop_accuracy"] = (totals[_INDEX["correct"]] / totals[_INDEX["stop_count"]]
                                 if totals[_INDEX["stop_count"]] else 0.0)
        if diverged is not None:
            logs["loss"] = float("nan")
        logs.update(records=int(records), steps=done, seconds=time.monotonic() - started,
                    diverged=diverged)
        return logs

    def _parts(self, stats):
        """The losses of one global batch from its all-reduced stats."""
        def ratio(a, b):
            return float(stats[_INDEX[a]] / stats[_INDEX[b]]) if stats[_INDEX[b]] else 0.0

        parts = {"frame_loss": ratio("frame_sum", "frame_count"),
                 "stop_loss": ratio("stop_sum", "stop_count")}
        parts["loss"] = float(losses.total_loss(
            parts, self.model.stop_loss_weight, self.model.losses))
        return parts

    # ------------------------------------------------------------------ #
    # State (checkpoints).
    # ------------------------------------------------------------------ #
    def get_state(self):
        """The weights and the optimizer's variables, as NumPy arrays.

        Returns:
            dict: `"weights"` (`model.get_weights()`) and `"optimizer"`
            (the values of `optimizer.variables`).
        """
        return {"weights": [np.asarray(w) for w in self.model.get_weights()],
                "optimizer": [np.asarray(keras.ops.convert_to_numpy(v))
                              for v in self.optimizer.variables]}

    def set_state(self, state):
        """Restores what `get_state` returned (on every worker alike)."""
        self.model.set_weights(state["weights"])
        variables = self.optimizer.variables
        if len(variables) != len(state["optimizer"]):
            raise ValueError(
                "Received an invalid value for argument `state`, expected "
                f"{len(variables)} optimizer variables, got {len(state['optimizer'])}.")
        for variable, value in zip(variables, state["optimizer"]):
            variable.assign(value)


def steps_for(sizes, batch_size):
    """The steps of an epoch: the most batches of any worker's share.

    Args:
        sizes: records in each worker's share (`streamgen.data.dataset.shard_sizes`).
        batch_size: int, per-worker batch.
    """
    return max(-(-int(size) // batch_size) for size in sizes) if sizes else 0


def train_distributed(build, dataset_fn, *, strategy=None, epochs=1, validation_fn=None,
                      patience=None, state=None, on_epoch_end=None):
    """Trains with `DistributedTraining`, epoch by epoch, as `fit` does.

    Run the same call on every worker (each with its own `dataset_fn`).

    Args:
        build: `() -> (model, optimizer)`, see `DistributedTraining`.
        dataset_fn: `epoch -> (batches, steps)`: this worker's batches of
            epoch `epoch` (0-based; build the order from it, so that a
            resumed run reads what the undisturbed one would) and the steps
            every worker runs (`steps_for`).
        strategy: a `tf.distribute.Strategy` (default: the current one).
        epochs: int, the last epoch (resumed runs start after `state`'s).
        validation_fn: optional `() -> (batches, steps)`, evaluated after
            each epoch; its figures are logged with a `val_` prefix.
        patience: optional int, stop when the monitored loss (`val_loss`
            with `validation_fn`, else `loss`) has not improved for that
            many epochs (Keras' `EarlyStopping`).
        state: optional dict from an earlier run's `on_epoch_end`
            (`"epoch"`, `"history"`, `"best"`, `"wait"`, `"arrays"`): resume.
        on_epoch_end: optional `(training, state) -> None`, after each
            epoch on every worker, with `state` as `state` takes it (the
            place to checkpoint and to save the best model).

    Returns:
        `(training, state)`: the `DistributedTraining` and the final state;
        `state["history"]` holds the logs of every epoch, `state["stopped"]`
        says why training ended (`"epochs"`, `"patience"` or `"diverged"`).

    Raises:
        DataError: a worker met a malformed record.
    """
    training = DistributedTraining(build, strategy)
    monitor = "val_loss" if validation_fn is not None else "loss"
    state = dict(state or {})
    if "arrays" in state:
        training.set_state(state["arrays"])
    state = {"epoch": state.get("epoch", 0), "history": list(state.get("history", [])),
             "best": state.get("best"), "wait": state.get("wait", 0), "stopped": "epochs",
             "improved": False}
    for epoch in range(state["epoch"], epochs):
        batches, steps = dataset_fn(epoch)
        logs = training.run_epoch(batches, steps, train=True)
        diverged = logs.pop("diverged")
        if validation_fn is not None and diverged is None:
            val_batches, val_steps = validation_fn()
            val = training.run_epoch(val_batches, val_steps, train=False)
            for name in ("loss", "frame_loss", "stop_loss", "stop_accuracy"):
                logs[f"val_{name}"] = val[name]
        state["history"].append(logs)
        state["epoch"] = epoch + 1
        value = logs.get(monitor, float("nan"))
        state["improved"] = diverged is None and math.isfinite(value) and (
            state["best"] is None or value < state["best"][1])
        if state["improved"]:
            state["best"], state["wait"] = (epoch, float(value)), 0
        else:
            state["wait"] += 1
        if diverged is not None:
            state["stopped"] = "diverged"
        elif patience is not None and state["wait"] >= patience:
            state["stopped"] = "patience"
        if on_epoch_end is not None:
            on_epoch_end(training, state)
        if state["stopped"] != "epochs":
            break
    return training, state
