"""Mixture-density frames (`frame_loss="mdn"`): the head's layout and loss.

With `K = mixtures` and `D = output_size`, the frame head gives per inner
step `K * (1 + 2 * D)` numbers, laid out as

    [logits (K) | means (K * D, component-major) | raw scales (K * D)]

- the mixture weights are `softmax(logits)`;
- the means are used as they are;
- the scales are `SCALE_FLOOR + softplus(raw)`, written
  `max(raw, 0) + log(1 + exp(-|raw|))` (stable, and LiteRT builtins only):
  always `>= SCALE_FLOOR`, so the likelihood of any finite target is
  finite.

The loss of one frame `y (D,)` is its negative log-likelihood under the
diagonal Gaussian mixture, computed with log-sum-exp over components:

    -logsumexp_k [log_softmax(logits)_k
                  + sum_d (-0.5 ((y_d - mean_kd) / scale_kd)^2
                           - log scale_kd - 0.5 log(2 pi))]

It is finite, with finite gradients, for scales at the floor and targets
far (1e4) from every mean. The greedy frame is the mean of the most likely
component.
"""

import math

from streamgen.quiet import import_tensorflow

# Before TensorFlow's import: importing it registers streamgen's Keras classes
# (`streamgen.quiet`), which imports `model`, which reads these.
SCALE_FLOOR = 1e-3
DEFAULT_MIXTURES = 5
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

tf = import_tensorflow()


def head_width(mixtures, output_size):
    """The frame head's width for mdn frames: `K * (1 + 2 * D)`."""
    return mixtures * (1 + 2 * output_size)


def mixtures_of(head, output_size):
    """`K` from a head output's last dimension and `D`."""
    return int(head.shape[-1]) // (1 + 2 * output_size)


def softplus(x):
    """`log(1 + exp(x))`, stable, in LiteRT builtin ops."""
    return tf.maximum(x, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(x)))


def split(head, output_size):
    """Splits the raw head output into the mixture's parameters.

    Args:
        head: float tensor `(..., K * (1 + 2 * D))`.
        output_size: int, `D`.

    Returns:
        `(logits (..., K), means (..., K, D), scales (..., K, D))`, the
        scales `>= SCALE_FLOOR`.
    """
    mixtures = mixtures_of(head, output_size)
    kd = mixtures * output_size
    shape = tf.concat([tf.shape(head)[:-1], [mixtures, output_size]], axis=0)
    logits = head[..., :mixtures]
    means = tf.reshape(head[..., mixtures:mixtures + kd], shape)
    scales = SCALE_FLOOR + softplus(tf.reshape(head[..., mixtures + kd:], shape))
    return logits, means, scales


def component(head, output_size, chosen, fused=False):
    """The mean and scale of one component per row, from the raw head.

    Cheaper than `split` then a gather when one component is used: only
    the chosen component's scales go through the softplus (the same
    values as `split`'s, elementwise), and the means and raw scales are
    gathered together, with a static reshape.

    Args:
        head: float tensor `(B, K * (1 + 2 * D))`, the raw head output.
        output_size: int, `D`.
        chosen: int32 tensor `(B,)`, a component index per row.
        fused: take the softplus as TensorFlow's one `Softplus` op instead
            of `softplus`'s seven (not a LiteRT builtin): the same scales
            to float32 rounding (relative differences up to ~6e-5 where the
            softplus is below ~1e-4, i.e. on scales at the floor).

    Returns:
        `(mean (B, D), scale (B, D))`, the scale `>= SCALE_FLOOR`.
    """
    mixtures = mixtures_of(head, output_size)
    # [means | raw scales] -> (B, 2, K, D); the chosen component -> (B, 2, D)
    pairs = tf.reshape(head[:, mixtures:], [-1, 2, mixtures, output_size])
    parts = tf.gather(pairs, chosen, axis=2, batch_dims=1)
    raw = parts[:, 1]
    return parts[:, 0], SCALE_FLOOR + (tf.math.softplus(raw) if fused else softplus(raw))


def greedy_frame(logits, means):
    """The mean of the most likely component.

    Args:
        logits: float tensor `(..., K)`.
        means: float tensor `(..., K, D)`.

    Returns:
        float tensor `(..., D)`.
    """
    mixtures = logits.shape[-1]
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (...,)
    one_hot = tf.cast(tf.equal(tf.range(mixtures), best[..., None]), means.dtype)
    return tf.reduce_sum(one_hot[..., None] * means, axis=-2)


def nll(y_true, head):
    """Negative log-likelihood per frame, unmasked.

    Args:
        y_true: float tensor `(..., D)`, the true frames.
        head: float tensor `(..., K * (1 + 2 * D))`, the raw head output.

    Returns:
        float tensor `(...)`.
    """
    output_size = int(y_true.shape[-1])
    logits, means, scales = split(head, output_size)
    z = (y_true[..., None, :] - means) / scales  # (..., K, D)
    per_component = tf.reduce_sum(
        -0.5 * tf.square(z) - tf.math.log(scales) - _HALF_LOG_2PI, axis=-1
    )  # (..., K)
    log_weights = tf.nn.log_softmax(logits, axis=-1)
    return -tf.reduce_logsumexp(log_weights + per_component, axis=-1)
