"""Training: the masked loss of the STOP-token scheme.

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

`sg.evaluate` (in `streamgen.offline.decode`, which needs no TensorFlow for a
`.tflite` export) measures what training is for: free-running lengths (the
STOP decisions) and, with lengths forced to the truth, the frames.
"""

import keras

from streamgen import checks
from streamgen import mdn as mdn_lib
from streamgen.quiet import import_tensorflow

tf = import_tensorflow()

FRAME_LOSSES = ("mse", "mae", "categorical", "mdn")


def check_frame_loss(frame_loss):
    """Validates the `frame_loss` option; returns it.

    Raises:
        ValueError: if it is not one of `"mse"`, `"mae"`, `"categorical"`,
            `"mdn"`.
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
    return checks.non_negative_float(name, value, allow_zero)


def frame_losses(y_true, y_pred, frame_loss="mse"):
    """Loss per frame, unmasked.

    Args:
        y_true: float tensor `(..., output_size)`, the true frames.
        y_pred: float tensor `(..., output_size)`, the predicted frames
            (probabilities for `"categorical"`); for `"mdn"`, the frame
            head's raw output `(..., K * (1 + 2 * output_size))`.
        frame_loss: `"mse"`, `"mae"`, `"categorical"` or `"mdn"`.

    Returns:
        A float tensor `(...)`: the mean squared / absolute error over
        `output_size`, the categorical cross-entropy, or the mixture's
        negative log-likelihood (`streamgen.mdn.nll`).
    """
    if frame_loss == "mse":
        return keras.losses.mean_squared_error(y_true, y_pred)
    if frame_loss == "mae":
        return keras.losses.mean_absolute_error(y_true, y_pred)
    if frame_loss == "categorical":
        return keras.losses.categorical_crossentropy(y_true, y_pred)
    if frame_loss == "mdn":
        return mdn_lib.nll(y_true, y_pred)
    check_frame_loss(frame_loss)


def mask_counts(y_true, sample_weight=None):
    """The weighted sizes of the frame and STOP masks of a batch.

    Args:
        y_true: dict with `"frame_mask"` and `"stop_mask"` `(B, T, M)`.
        sample_weight: optional float `(B,)`, a weight per sequence.

    Returns:
        A pair of float scalar tensors `(frame_count, stop_count)`: what
        `masked_losses` divides by. A data-parallel step sums them over the
        replicas and passes the sums back as `counts` (see
        `streamgen.training.distributed`).
    """
    frame_mask, stop_mask = _masks(y_true, sample_weight)
    return tf.reduce_sum(frame_mask), tf.reduce_sum(stop_mask)


def _masks(y_true, sample_weight):
    frame_mask = tf.cast(y_true["frame_mask"], tf.float32)
    stop_mask = tf.cast(y_true["stop_mask"], tf.float32)
    if sample_weight is not None:
        weight = tf.reshape(tf.cast(sample_weight, tf.float32), [-1, 1, 1])
        frame_mask = frame_mask * weight
        stop_mask = stop_mask * weight
    return frame_mask, stop_mask


def masked_losses(y_true, y_pred, frame_loss="mse", stop_pos_weight=1.0,
                  sample_weight=None, counts=None):
    """The parts of the training loss, each averaged over its mask.

    Args:
        y_true: dict with `"frames"` `(B, T, M, O)` and `"frame_mask"`,
            `"stop_labels"`, `"stop_mask"` `(B, T, M)` (as `sg.make_dataset`
            yields them).
        y_pred: dict with `"frames"` `(B, T, M, O)` and `"stop_logits"`
            `(B, T, M)` (as `StreamGen.call` returns them); for `"mdn"`,
            `"mixture"` `(B, T, M, K * (1 + 2 * O))` is the frames' input.
        frame_loss: `"mse"`, `"mae"`, `"categorical"` or `"mdn"`.
        stop_pos_weight: float, weight of the positive (STOP) class in the
            binary cross-entropy.
        sample_weight: optional float `(B,)`, a weight per sequence (it
            multiplies the masks).
        counts: optional pair of float scalars `(frame_count, stop_count)`
            to divide the sums by instead of this batch's own (see
            `mask_counts`): with the counts of the GLOBAL batch of a
            data-parallel step, the parts of the replicas add up to the
            parts of the global batch.

    Returns:
        dict of float scalar tensors: `"frame_loss"` (mean over emitted
        frames, 0 if none), `"stop_loss"` (mean binary cross-entropy from
        logits over `stop_mask`, 0 if empty), `"stop_accuracy"` (share of
        `stop_mask` steps where `logit > 0` matches the label) and
        `"stop_count"` (the weighted size of `stop_mask`, this batch's own).
    """
    frame_mask, stop_mask = _masks(y_true, sample_weight)
    labels = tf.cast(y_true["stop_labels"], tf.float32)
    predicted = y_pred["mixture"] if frame_loss == "mdn" else y_pred["frames"]
    per_frame = frame_losses(
        tf.cast(y_true["frames"], tf.float32), predicted, frame_loss
    )  # (B, T, M)
    stop_count = tf.reduce_sum(stop_mask)
    if counts is None:
        frame_divisor, stop_divisor = tf.reduce_sum(frame_mask), stop_count
    else:
        frame_divisor, stop_divisor = counts
    frame_value = tf.math.divide_no_nan(tf.reduce_sum(per_frame * frame_mask), frame_divisor)
    logits = y_pred["stop_logits"]
    per_step = tf.nn.weighted_cross_entropy_with_logits(
        labels=labels, logits=logits, pos_weight=stop_pos_weight
    )  # (B, T, M)
    stop_value = tf.math.divide_no_nan(tf.reduce_sum(per_step * stop_mask), stop_divisor)
    correct = tf.cast(tf.equal(tf.cast(logits > 0, tf.float32), labels), tf.float32)
    accuracy = tf.math.divide_no_nan(tf.reduce_sum(correct * stop_mask), stop_divisor)
    return {
        "frame_loss": frame_value,
        "stop_loss": stop_value,
        "stop_accuracy": accuracy,
        "stop_count": stop_count,
    }


def total_loss(parts, stop_loss_weight, extra_losses=()):
    """The training loss from the parts of `masked_losses`.

    Args:
        parts: dict with `"frame_loss"` and `"stop_loss"` float scalars.
        stop_loss_weight: float, the weight of the STOP loss.
        extra_losses: tensors added, each summed (a model's regularization
            `losses`).

    Returns:
        A float scalar tensor: `frame_loss + stop_loss_weight * stop_loss`
        plus the extra losses.
    """
    total = parts["frame_loss"] + stop_loss_weight * parts["stop_loss"]
    for loss in extra_losses:
        total = total + tf.cast(tf.reduce_sum(loss), total.dtype)
    return total
