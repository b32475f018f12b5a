"""Samplers: how a frame is drawn from the frame head's distribution.

A sampler is a small serializable object, like a stop criterion:

- `Greedy()`: categorical frames -> the one-hot of the most likely class;
  mdn frames -> the mean of the most likely component; mse / mae frames ->
  the frame as the head gives it (the only sampler that applies to them).
- `Random(temperature)`, `TopK(k, temperature)`, `TopP(p, temperature)`:
  a class (categorical) or a mixture component (mdn) drawn from
  `softmax(log(probs) / temperature)`, restricted to the `k` most likely
  ones / to the smallest set (most likely first) whose tempered probability
  reaches `p`; for mdn frames the frame is then
  `mean + scale * (sqrt(temperature) * normal)`.

Samplers never draw random numbers themselves. A step gets uniform numbers
`u` in `(0, 1)` as an input (drawn by `streamgen.randomness` from the
stream's seed and position), and the sampler's parameters as per-row
numbers (`row_params`): streams with different samplers share one compiled
step. The draws of ONE inner step are laid out in columns
(`draws_per_step`):

- column 0: the StopSample draw (`sg.StopSample`), used or not;
- column 1: the class (categorical) or component (mdn) choice, by inverse
  CDF: the first class, most likely first, whose cumulative (restricted)
  probability reaches `u * total`;
- columns 2 .. 2 + 2 * ceil(D / 2) (mdn only, `D = output_size`): the
  Box-Muller uniforms, first `ceil(D / 2)` radii `u1` then as many angles
  `u2`; `normal = concat(sqrt(-2 log u1) cos(2 pi u2),
  sqrt(-2 log u1) sin(2 pi u2))[:D]`.

So mse / mae steps take 1 draw, categorical steps 2 and mdn steps
`2 + 2 * ceil(D / 2)`.

The graph functions `sample_categorical` and `sample_mdn` use public
TensorFlow ops only, no random op: they run under XLA and convert to LiteRT
builtins. In a step's inner loop, what does not depend on the frame head
(the Box-Muller normals, the greedy rows, the top-k limits) is computed
once per outer step by `make_plan` and handed to them: at batch 1 a step
costs about one unit per op it runs, so the loop body holds only the
sort and the draw (`choose`). `sample_categorical_np` and
`sample_mdn_np` are numpy references with the same math. This module imports neither TensorFlow nor Keras: the
graph functions import TensorFlow when first called, and the classes are
registered as Keras serializables (package `"streamgen"`) once Keras is
imported (`register_keras`).
"""

import math
import sys
import types

import numpy as np

from streamgen.values import ConfigValue

FRAME_KINDS = ("mse", "mae", "categorical", "mdn")
SAMPLED_KINDS = ("categorical", "mdn")
PARAMS = 4  # row_params columns: [greedy, temperature, k, p]
DEFAULT_K = 5  # `get("top_k")`
DEFAULT_P = 0.9  # `get("top_p")`


def _invalid(name, expected, value, owner):
    return ValueError(
        f"Received an invalid value for argument `{name}` of {owner}, "
        f"expected {expected}, got {value!r}."
    )


def _temperature(value, owner):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise _invalid("temperature", "a positive finite number", value, owner)
    return float(value)


class Sampler(ConfigValue):
    """Base class of samplers.

    Args:
        temperature: positive finite float; the log-probabilities are
            divided by it (and mdn scales multiplied by its square root).
            Defaults to 1.0.
    """

    greedy = False

    def __init__(self, temperature=1.0):
        self.temperature = _temperature(temperature, type(self).__name__)

    def params(self):
        """This sampler's row of `row_params`: `[greedy, temperature, k, p]`."""
        return [1.0 if self.greedy else 0.0, self.temperature, 0.0, 1.0]

    def applies_to(self, frame_loss):
        """Whether the sampler can draw frames of kind `frame_loss`."""
        return self.greedy or frame_loss in SAMPLED_KINDS

    def get_config(self):
        return {"temperature": self.temperature}


class Greedy(Sampler):
    """The most likely frame: no randomness.

    Categorical -> the one-hot of the most likely class; mdn -> the mean of
    the most likely component; mse / mae -> the frame as today.

    Example:

    >>> sg.samplers.Greedy()
    Greedy()
    """

    greedy = True

    def __init__(self):
        super().__init__(1.0)

    def get_config(self):
        return {}


class Random(Sampler):
    """A class / component drawn from all of `softmax(log(probs) / temperature)`.

    Args:
        temperature: positive float. Defaults to 1.0.

    Example:

    >>> sg.samplers.Random(temperature=0.7)
    Random(temperature=0.7)
    """


class TopK(Sampler):
    """A draw restricted to the `k` most likely classes / components.

    `TopK(1)` is `Greedy()`.

    Args:
        k: positive int.
        temperature: positive float. Defaults to 1.0.

    Example:

    >>> sg.samplers.TopK(3)
    TopK(k=3, temperature=1.0)
    """

    def __init__(self, k, temperature=1.0):
        super().__init__(temperature)
        ok = isinstance(k, (int, np.integer)) and not isinstance(k, bool)
        if not ok or k < 1 or k > 2**24:  # k travels as a float32
            raise _invalid("k", "a positive integer", k, "TopK")
        self.k = int(k)

    def params(self):
        return [0.0, self.temperature, float(self.k), 1.0]

    def get_config(self):
        return {"k": self.k, "temperature": self.temperature}


class TopP(Sampler):
    """A draw restricted to the nucleus: the smallest set, most likely
    first, whose tempered probability reaches `p`.

    Args:
        p: float in `(0, 1]`; 1.0 is `Random`.
        temperature: positive float. Defaults to 1.0.

    Example:

    >>> sg.samplers.TopP(0.9)
    TopP(p=0.9, temperature=1.0)
    """

    def __init__(self, p, temperature=1.0):
        super().__init__(temperature)
        ok = isinstance(p, (int, float, np.integer, np.floating)) and not isinstance(p, bool)
        if not ok or not 0.0 < float(p) <= 1.0:
            raise _invalid("p", "a probability in (0, 1]", p, "TopP")
        self.p = float(p)

    def params(self):
        return [0.0, self.temperature, 0.0, self.p]

    def get_config(self):
        return {"p": self.p, "temperature": self.temperature}


_CLASSES = {"Greedy": Greedy, "Random": Random, "TopK": TopK, "TopP": TopP}
_NAMES = {
    "greedy": lambda: Greedy(),
    "random": lambda: Random(),
    "top_k": lambda: TopK(DEFAULT_K),
    "top-k": lambda: TopK(DEFAULT_K),
    "top_p": lambda: TopP(DEFAULT_P),
    "top-p": lambda: TopP(DEFAULT_P),
}


def get(identifier):
    """Resolves a `sampler=` argument to a `Sampler`.

    Args:
        identifier: `None` (-> `Greedy()`), a name (`"greedy"`, `"random"`,
            `"top_k"` / `"top-k"` (k=5), `"top_p"` / `"top-p"` (p=0.9)), a
            serialized sampler `{"class_name": "TopK", "config": {"k": 3}}`
            (a `"streamgen>"` prefix is accepted), or a `Sampler`.

    Returns:
        A `Sampler`.

    Raises:
        ValueError: for an unknown name, class or option, or a bad value.

    Example:

    >>> sg.samplers.get({"class_name": "TopP", "config": {"p": 0.5}})
    TopP(p=0.5, temperature=1.0)
    """
    if identifier is None:
        return Greedy()
    if isinstance(identifier, Sampler):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _NAMES:
            raise ValueError(
                "Received an invalid value for argument `sampler`, expected one "
                f"of {sorted(_NAMES)}, a sampler or its config, got {identifier!r}."
            )
        return _NAMES[identifier]()
    if isinstance(identifier, dict):
        class_name = identifier.get("class_name")
        name = class_name.split(">")[-1] if isinstance(class_name, str) else None
        config = identifier.get("config", {})
        if name not in _CLASSES or not isinstance(config, dict):
            raise ValueError(
                "Received an invalid value for argument `sampler`, expected "
                f'{{"class_name": one of {sorted(_CLASSES)}, "config": {{...}}}}, '
                f"got {identifier!r}."
            )
        try:
            return _CLASSES[name].from_config(config)
        except TypeError as error:
            raise ValueError(
                f"Received an invalid value for argument `sampler`: the config "
                f"of {name} takes {_options(name)}, got {config!r}."
            ) from error
    raise ValueError(
        "Received an invalid value for argument `sampler`, expected None, a "
        f"name, a config dict or a sampler, got {identifier!r}."
    )


def _options(name):
    return {"Greedy": "no options", "Random": "temperature", "TopK": "k and temperature",
            "TopP": "p and temperature"}[name]


def serialize(sampler):
    """A sampler as JSON-ready `{"class_name", "config"}`."""
    sampler = get(sampler)
    return {"class_name": type(sampler).__name__, "config": sampler.get_config()}


def check_applies(sampler, frame_loss):
    """Checks that `sampler` can draw frames of kind `frame_loss`; returns it.

    Args:
        sampler: anything `get` takes.
        frame_loss: the model's frame kind, one of `FRAME_KINDS`.

    Returns:
        The resolved `Sampler`.

    Raises:
        ValueError: naming the frame kind, for a random sampler on `"mse"`
            or `"mae"` frames.
    """
    sampler = get(sampler)
    if frame_loss not in FRAME_KINDS:
        raise ValueError(
            "Received an invalid value for argument `frame_loss`, expected one "
            f"of {list(FRAME_KINDS)}, got {frame_loss!r}."
        )
    if not sampler.applies_to(frame_loss):
        raise ValueError(
            f"Received an invalid value for argument `sampler`: {sampler!r} "
            f"draws categorical or mdn frames, but this model's frames are "
            f"{frame_loss!r} (frame_loss={frame_loss!r}), which only Greedy() "
            "decodes; train with frame_loss='mdn' or 'categorical' to sample."
        )
    return sampler


def row_params(sampler_or_list, rows):
    """Per-row sampler parameters, the input of the graph functions.

    Args:
        sampler_or_list: one sampler (anything `get` takes) for every row,
            or a list of `rows` of them.
        rows: non-negative int, the batch size.

    Returns:
        float32 array `(rows, 4)`: `[greedy (1.0 / 0.0), temperature,
        k (0 = no limit), p (1.0 = no limit)]`.

    Raises:
        ValueError: for a list of another length, or a bad sampler.
    """
    if isinstance(sampler_or_list, (list, tuple)):
        if len(sampler_or_list) != rows:
            raise ValueError(
                "Received an invalid value for argument `sampler`, expected one "
                f"sampler or a list of {rows} (one per row), got a list of "
                f"{len(sampler_or_list)}."
            )
        return np.asarray([get(s).params() for s in sampler_or_list],
                          np.float32).reshape(rows, PARAMS)
    return np.tile(np.asarray([get(sampler_or_list).params()], np.float32), (rows, 1))


def normal_draws(output_size):
    """The Box-Muller uniforms of one mdn frame: `2 * ceil(output_size / 2)`."""
    return 2 * (-(-int(output_size) // 2))


def draws_per_step(frame_loss, output_size):
    """How many uniforms ONE inner step consumes (see the module docstring).

    Returns:
        1 for `"mse"` / `"mae"` (the stop draw), 2 for `"categorical"`
        (stop, class), `2 + 2 * ceil(output_size / 2)` for `"mdn"` (stop,
        component, Box-Muller pairs).
    """
    if frame_loss in ("mse", "mae"):
        return 1
    if frame_loss == "categorical":
        return 2
    if frame_loss == "mdn":
        return 2 + normal_draws(output_size)
    raise ValueError(
        "Received an invalid value for argument `frame_loss`, expected one of "
        f"{list(FRAME_KINDS)}, got {frame_loss!r}."
    )


# ---------------------------------------------------------------------- #
# Graph functions (TensorFlow, imported on first use).
# ---------------------------------------------------------------------- #
def _tf():
    from streamgen.quiet import import_tensorflow

    return import_tensorflow()


def make_plan(params, classes, u_comp, u_normal=None, depth=None):
    """The parts of a draw that depend only on the sampler parameters and
    the uniforms, not on the frame head (TensorFlow): computed once per
    outer step, outside the inner loop, so each inner step only sorts and
    draws (`choose`).

    Args:
        params: float32 tensor `(B, 4)`, from `row_params`.
        classes: int, the number of classes (categorical) or components (mdn).
        u_comp: float32 tensor `(B,)` or `(B, M)`: the choice column(s).
        u_normal: optional float32 tensor `(B, 2 * ceil(D / 2))` or
            `(B, M, 2 * ceil(D / 2))`: the Box-Muller columns (mdn).
        depth: int `D`, with `u_normal`.

    Returns:
        A `types.SimpleNamespace` (not a class of ours: autograph leaves
        it alone) with:
        temperature: `(B, 1)`.
        bound: `(B, classes)`: rank `r` is kept when the probability
            before it is below `bound[:, r]`: `p` within the top `k` (all
            ranks where `k` is 0), -1 beyond (the top-k and nucleus tests
            in one comparison).
        u_comp: the argument with a last axis of 1 (`(B, 1)` or
            `(B, M, 1)`), 0 on greedy rows (a draw with `u = 0` is the most
            likely class: greedy without a select per step).
        greedy: bool `(B, 1)`.
        noise: `None`, or the mdn noise before the scale, `(B, D)` /
            `(B, M, D)`: `sqrt(temperature) * normal` (the Box-Muller
            standard normals), 0 on greedy rows (`mean + scale * 0` is the
            mean: greedy without a select per step).
    """
    tf = _tf()
    greedy = params[:, :1] > 0.5  # (B, 1)
    temperature = params[:, 1:2]
    k = params[:, 2:3]
    rank = tf.cast(tf.range(classes), tf.float32)[None, :]  # (1, C)
    limit = tf.logical_or(k <= 0.0, rank < k)  # (B, C)
    u_comp = tf.expand_dims(u_comp, -1)  # (B, 1) or (B, M, 1)
    per_step = len(u_comp.shape) == 3  # (B, M, ...): a column per inner step
    row_greedy = greedy[:, :, None] if per_step else greedy  # (B, 1, 1) or (B, 1)
    noise = None
    if u_normal is not None:
        noise_scale = tf.sqrt(temperature)  # (B, 1)
        noise = tf.where(row_greedy, 0.0, (noise_scale[:, :, None] if per_step else noise_scale)
                         * box_muller(u_normal, depth))
    return types.SimpleNamespace(
        greedy=greedy,
        temperature=temperature,
        bound=tf.where(limit, params[:, 3:4], -1.0),  # (B, C)
        u_comp=tf.where(row_greedy, 0.0, u_comp),
        noise=noise,
    )


def box_muller(u_normal, depth):
    """Standard normals `(..., D)` from uniforms `(..., 2 * ceil(D / 2))`
    (TensorFlow): radii first, then angles (see the module docstring)."""
    tf = _tf()
    half = -(-depth // 2)
    radius = tf.sqrt(-2.0 * tf.math.log(u_normal[..., :half]))  # (..., H)
    angle = (2.0 * math.pi) * u_normal[..., half:2 * half]  # (..., H)
    return tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=-1)[..., :depth]


def choose(log_weights, plan, u):
    """The drawn class / component index `(B,)` int32 (TensorFlow).

    Inverse-CDF draw with `u` (`(B, 1)`, 0 on greedy rows: see `make_plan`) over
    the tempered probabilities restricted to the top `k` and to the
    nucleus `p` (both prefixes of the classes sorted most likely first,
    ties by lower index). As the kept classes are a prefix, the restricted
    CDF reaches its total at the last kept rank, which `u * total` never
    exceeds: the count of CDF entries below it is a kept rank.
    """
    tf = _tf()
    classes = log_weights.shape[-1]
    probs = tf.nn.softmax(log_weights / plan.temperature, axis=-1)  # (B, C)
    ordered, order = tf.math.top_k(probs, k=classes)  # (B, C) most likely first
    before = tf.cumsum(ordered, axis=-1, exclusive=True)  # (B, C)
    keep = before < plan.bound  # a prefix (top k, nucleus): rank 0 always kept
    cdf = tf.cumsum(tf.where(keep, ordered, 0.0), axis=-1)  # (B, C)
    target = u * cdf[:, -1:]  # (B, 1)
    drawn = tf.reduce_sum(tf.cast(cdf < target, tf.int32), axis=-1)  # (B,) a kept rank
    return tf.gather(order, drawn, batch_dims=1)  # (B,) a class index


def sample_categorical(probs, params, u, plan=None):
    """Draws a class per row; returns its one-hot (TensorFlow graph function).

    Args:
        probs: float32 tensor `(B, C)`, the class probabilities (the
            softmax frame head's output).
        params: float32 tensor `(B, 4)`, from `row_params`.
        u: float32 tensor `(B,)` in `(0, 1)`: the step's column 1; with
            `plan`, `(B, 1)` (`plan.u_comp` at this step).
        plan: optional `make_plan` of these params (its `u_comp` unused); made
            here when `None`.

    Returns:
        float32 tensor `(B, C)`: the one-hot of the drawn class (greedy
        rows: of the most likely one).
    """
    tf = _tf()
    classes = probs.shape[-1]
    if plan is None:
        plan = make_plan(params, classes, u)
        u = plan.u_comp
    log_probs = tf.math.log(tf.maximum(probs, 1e-30))
    return tf.one_hot(choose(log_probs, plan, u), classes, dtype=tf.float32)


def sample_mdn(logits, means, scales, params, u_comp, u_normal, plan=None):
    """Draws an mdn frame per row (TensorFlow graph function).

    Args:
        logits: float32 tensor `(B, K)`, the mixture weights' logits.
        means: float32 tensor `(B, K, D)`.
        scales: float32 tensor `(B, K, D)`, positive.
        params: float32 tensor `(B, 4)`, from `row_params`.
        u_comp: float32 tensor `(B,)`, the step's column 1; with `plan`,
            `(B, 1)` (`plan.u_comp` at this step).
        u_normal: float32 tensor `(B, 2 * ceil(D / 2))`, the step's
            columns 2.. (radii then angles, see the module docstring); with
            `plan`, the noise `(B, D)` (`plan.noise` at this step:
            `sqrt(T) * normal`, 0 on greedy rows).
        plan: optional `make_plan` of these params; made here when `None`.

    Returns:
        float32 tensor `(B, D)`: greedy rows the mean of the most likely
        component, the others `mean + scale * (sqrt(T) * normal)` of the
        drawn component.
    """
    tf = _tf()
    if plan is None:
        plan = make_plan(params, logits.shape[-1], u_comp, u_normal, means.shape[-1])
        u_comp, u_normal = plan.u_comp, plan.noise
    chosen = choose(logits, plan, u_comp)  # (B,)
    mean = tf.gather(means, chosen, batch_dims=1)  # (B, D)
    scale = tf.gather(scales, chosen, batch_dims=1)
    return mean + scale * u_normal  # greedy rows: noise 0


# ---------------------------------------------------------------------- #
# numpy references (same math, float32).
# ---------------------------------------------------------------------- #
def _softmax_np(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def choose_np(log_weights, params, u):
    """numpy reference of the class / component choice: int indices `(B,)`."""
    log_weights = np.asarray(log_weights, np.float32)
    params = np.asarray(params, np.float32)
    u = np.asarray(u, np.float32)
    probs = _softmax_np(log_weights / params[:, 1:2]).astype(np.float32)
    order = np.argsort(-probs, axis=-1, kind="stable")  # (B, C)
    ordered = np.take_along_axis(probs, order, axis=-1)
    classes = probs.shape[-1]
    rank = np.arange(classes, dtype=np.float32)[None, :]
    before = np.cumsum(ordered, axis=-1, dtype=np.float32) - ordered
    keep = ((params[:, 2:3] <= 0) | (rank < params[:, 2:3])) & (before < params[:, 3:4])
    cdf = np.cumsum(ordered * keep, axis=-1, dtype=np.float32)
    drawn = (cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1)
    drawn = np.minimum(drawn, keep.sum(axis=-1) - 1)
    drawn = np.where(params[:, 0] > 0.5, 0, drawn)
    return np.take_along_axis(order, drawn[:, None], axis=-1)[:, 0]


def sample_categorical_np(probs, params, u):
    """numpy reference of `sample_categorical`: one-hot float32 `(B, C)`."""
    probs = np.asarray(probs, np.float32)
    chosen = choose_np(np.log(np.maximum(probs, np.float32(1e-30))), params, u)
    return np.eye(probs.shape[-1], dtype=np.float32)[chosen]


def box_muller_np(u_normal, depth):
    """Standard normals `(B, depth)` from `(B, 2 * ceil(depth / 2))` uniforms."""
    u_normal = np.asarray(u_normal, np.float32)
    half = -(-depth // 2)
    radius = np.sqrt(np.float32(-2.0) * np.log(u_normal[:, :half]))
    angle = np.float32(2.0 * math.pi) * u_normal[:, half:2 * half]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)[:, :depth]


def sample_mdn_np(logits, means, scales, params, u_comp, u_normal):
    """numpy reference of `sample_mdn`: float32 `(B, D)`."""
    means = np.asarray(means, np.float32)
    scales = np.asarray(scales, np.float32)
    params = np.asarray(params, np.float32)
    chosen = choose_np(logits, params, u_comp)
    rows = np.arange(means.shape[0])
    mean, scale = means[rows, chosen], scales[rows, chosen]  # (B, D)
    noise = scale * (np.sqrt(params[:, 1:2]) * box_muller_np(u_normal, means.shape[-1]))
    return np.where(params[:, :1] > 0.5, mean, mean + noise).astype(np.float32)


# ---------------------------------------------------------------------- #
# Keras serialization.
# ---------------------------------------------------------------------- #
_registered = []


def register_keras():
    """Registers the sampler classes as Keras serializables ("streamgen>...")."""
    if _registered:
        return
    import keras

    for cls in (Sampler, *_CLASSES.values()):
        keras.saving.register_keras_serializable(package="streamgen")(cls)
    _registered.append(True)


if "keras" in sys.modules:
    register_keras()
