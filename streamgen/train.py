"""Training: the masked loss of the STOP-token scheme, and `evaluate`.

Teacher forcing trains every inner step of every outer step at once (see
`StreamGen.call`). With `L = len(Out[t])`, `M = max_steps` and inner steps
`j = 0 .. M - 1` (docs/design.md):

- the frame loss covers the emitted frames, `j < L` (`frame_mask`);
- the STOP loss covers the steps whose stop decision counts, `j <= L`
  (`stop_mask`), with label 1 at `j == L` (the STOP token) and 0 before it;
  a row with `L == M` has no STOP label (decoding ends at the cap);
- padded outer steps are masked out of both (`sg.make_dataset` builds the
  masks).

Each part is averaged over its mask. `StreamGen.compute_loss` returns
`frame_loss + stop_loss_weight * stop_loss`.

`evaluate` measures what training is for: free-running lengths (the STOP
decisions) and, with lengths forced to the truth, the frames.
"""

import math

import keras
import numpy as np

from streamgen import _checks
from streamgen import data as data_lib
from streamgen import offline
from streamgen import ragged
from streamgen._quiet import import_tensorflow

tf = import_tensorflow()

FRAME_LOSSES = ("mse", "mae", "categorical")


def check_frame_loss(frame_loss):
    """Validates the `frame_loss` option; returns it.

    Raises:
        ValueError: if it is not one of `"mse"`, `"mae"`, `"categorical"`.
    """
    if not isinstance(frame_loss, str) or frame_loss not in FRAME_LOSSES:
        raise ValueError(
            "Received an invalid value for argument `frame_loss`, expected "
            f"one of {list(FRAME_LOSSES)}, got {frame_loss!r}."
        )
    return frame_loss


def check_weight(name, value, allow_zero):
    """Validates a loss weight (finite, `>= 0` or `> 0`); returns a float.

    Raises:
        ValueError: naming `name` and echoing `value`.
    """
    bound = "non-negative" if allow_zero else "positive"
    number = float(value) if isinstance(value, (int, float, np.number)) else math.nan
    if (isinstance(value, bool) or not math.isfinite(number)
            or number < 0 or (number == 0 and not allow_zero)):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a "
            f"finite {bound} number, got {value!r}."
        )
    return number


def frame_losses(y_true, y_pred, frame_loss="mse"):
    """Loss per frame, unmasked.

    Args:
        y_true: float tensor `(..., output_size)`, the true frames.
        y_pred: float tensor `(..., output_size)`, the predicted frames
            (probabilities for `"categorical"`).
        frame_loss: `"mse"`, `"mae"` or `"categorical"`.

    Returns:
        A float tensor `(...)`: the mean squared / absolute error over
        `output_size`, or the categorical cross-entropy.
    """
    if frame_loss == "mse":
        return keras.losses.mean_squared_error(y_true, y_pred)
    if frame_loss == "mae":
        return keras.losses.mean_absolute_error(y_true, y_pred)
    if frame_loss == "categorical":
        return keras.losses.categorical_crossentropy(y_true, y_pred)
    check_frame_loss(frame_loss)


def masked_losses(y_true, y_pred, frame_loss="mse", stop_pos_weight=1.0,
                  sample_weight=None):
    """The parts of the training loss, each averaged over its mask.

    Args:
        y_true: dict with `"frames"` `(B, T, M, O)` and `"frame_mask"`,
            `"stop_labels"`, `"stop_mask"` `(B, T, M)` (as `sg.make_dataset`
            yields them).
        y_pred: dict with `"frames"` `(B, T, M, O)` and `"stop_logits"`
            `(B, T, M)` (as `StreamGen.call` returns them).
        frame_loss: `"mse"`, `"mae"` or `"categorical"`.
        stop_pos_weight: float, weight of the positive (STOP) class in the
            binary cross-entropy.
        sample_weight: optional float `(B,)`, a weight per sequence (it
            multiplies the masks).

    Returns:
        dict of float scalar tensors: `"frame_loss"` (mean over emitted
        frames, 0 if none), `"stop_loss"` (mean binary cross-entropy from
        logits over `stop_mask`, 0 if empty), `"stop_accuracy"` (share of
        `stop_mask` steps where `logit > 0` matches the label) and
        `"stop_count"` (the weighted size of `stop_mask`).
    """
    frame_mask = tf.cast(y_true["frame_mask"], tf.float32)
    stop_mask = tf.cast(y_true["stop_mask"], tf.float32)
    labels = tf.cast(y_true["stop_labels"], tf.float32)
    if sample_weight is not None:
        weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1, 1, 1])
        frame_mask = frame_mask * weight
        stop_mask = stop_mask * weight
    per_frame = frame_losses(
        tf.cast(y_true["frames"], tf.float32), y_pred["frames"], frame_loss
    )  # (B, T, M)
    frame_value = tf.math.divide_no_nan(
        tf.reduce_sum(per_frame * frame_mask), tf.reduce_sum(frame_mask)
    )
    logits = y_pred["stop_logits"]
    per_step = tf.nn.weighted_cross_entropy_with_logits(
        labels=labels, logits=logits, pos_weight=stop_pos_weight
    )  # (B, T, M)
    stop_count = tf.reduce_sum(stop_mask)
    stop_value = tf.math.divide_no_nan(tf.reduce_sum(per_step * stop_mask), stop_count)
    correct = tf.cast(tf.equal(tf.cast(logits > 0, tf.float32), labels), tf.float32)
    accuracy = tf.math.divide_no_nan(tf.reduce_sum(correct * stop_mask), stop_count)
    return {
        "frame_loss": frame_value,
        "stop_loss": stop_value,
        "stop_accuracy": accuracy,
        "stop_count": stop_count,
    }


def evaluate(model, inputs, targets, stop=None, batch_size=256):
    """Free-running lengths and length-forced frames against the truth.

    Decodes in batches of similar length (`streamgen.offline`: sequences
    padded at the end; decoding is causal, so padding never changes real
    steps).

    Args:
        model: a `sg.StreamGen`, a `sg.Runtime` (a LiteRT export opened
            with `sg.open_runtime` gives the same figures), or a `.keras` /
            `.tflite` path.
        inputs: a list of N arrays `(T_n, input_size)` or one array
            `(N, T, input_size)`.
        targets: a list of N lists of `T_n` arrays `(L, output_size)`, or a
            `tf.RaggedTensor` `(N, T, None, output_size)`.
        stop: stop criteria for the free-running pass; `None` uses the
            model's.
        batch_size: positive int, sequences decoded together.

    Returns:
        dict of Python floats:
        `"length_accuracy"`: share of real outer steps whose free-running
        `len(Out[t])` (`model.decode(x, stop=stop)`) equals the true one;
        `"length_mae"`: mean absolute difference of those lengths;
        `"frame_mse"`: mean squared error over all true frames and
        `output_size`, decoding with the true lengths forced
        (`model.decode(x, lengths=...)`, so frames align); NaN when the
        targets hold no frame.

    Raises:
        ValueError: malformed or mismatched inputs / targets (as
            `sg.make_dataset`), or a bad `batch_size`.

    Example:

    >>> inputs, targets = sg.load_jsonl("samples/valid.jsonl")
    >>> figures = sg.evaluate(sg.load_default(), inputs, targets)
    >>> sorted(figures), figures["length_accuracy"] > 0.95
    (['frame_mse', 'length_accuracy', 'length_mae'], True)
    """
    batch_size = _checks.positive_int("batch_size", batch_size)
    runtime = offline.as_runtime(model, stop=stop)
    flat_x = ragged.flatten_inputs(inputs)
    flat_y = ragged.flatten_targets(targets, runtime.output_size)
    steps, target_steps = flat_x.steps, flat_y.steps
    if len(steps) != len(target_steps) or np.any(steps != target_steps):
        raise ValueError(
            "Received inputs and targets that do not match: "
            f"{len(steps)} input sequences of {steps.tolist()[:8]} steps, "
            f"{len(target_steps)} target sequences of {target_steps.tolist()[:8]} steps."
        )
    if flat_x.rows.shape[1] != runtime.input_size:
        raise _checks.invalid("inputs", f"vectors of width input_size={runtime.input_size}",
                              f"width {flat_x.rows.shape[1]}")
    cap = runtime.trained_max_steps
    ragged.check_lengths(flat_y, cap)
    sequences = ragged.split(flat_x.rows, steps)
    frames, lengths = data_lib.pad_targets(targets, cap, runtime.output_size)

    totals = dict(steps=0, correct=0, abs_error=0.0, squared=0.0, values=0)
    for index in offline.length_batches(steps, batch_size):
        x, _ = offline.pad([sequences[n] for n in index], runtime.input_size)  # (B, T, I)
        T = x.shape[1]
        real = np.arange(T)[None, :] < steps[index][:, None]  # (B, T)
        true_lengths = lengths[index, :T]  # (B, T), 0 on padded steps
        true_frames = frames[index, :T]  # (B, T, M, O)

        _, free_lengths = offline.decode_padded(runtime, x, steps[index])
        difference = np.abs(free_lengths - true_lengths)[real]
        totals["steps"] += difference.size
        totals["correct"] += int(np.count_nonzero(difference == 0))
        totals["abs_error"] += float(difference.sum())

        forced_frames, _ = offline.decode_padded(runtime, x, steps[index], lengths=true_lengths)
        emitted = np.arange(cap)[None, None, :] < true_lengths[..., None]
        error = (forced_frames - true_frames)[emitted]  # (F, O)
        totals["squared"] += float(np.square(error, dtype=np.float64).sum())
        totals["values"] += error.size

    return {
        "length_accuracy": totals["correct"] / totals["steps"],
        "length_mae": totals["abs_error"] / totals["steps"],
        "frame_mse": (totals["squared"] / totals["values"]
                      if totals["values"] else float("nan")),
    }
