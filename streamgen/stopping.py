"""Stop criteria: small serializable objects that end an `Out[i]`.

At inner step `j` the decoder produces a frame `y[i, j]` and a stop logit.
Every criterion looks at them and answers, per row, "is step `j` the STOP
token?". Any criterion that fires ends the row: step `j` is not emitted and
`len(Out[i]) == j`. The cap `max_steps` is not a criterion: it always holds,
beside whatever criteria are active.

A criterion is split like a KerasHub sampler policy: the *kind* (the class and
any structural option such as `mode`) decides which graph is compiled, while
the `threshold` is fed to the compiled step as a tensor, so changing a
threshold at inference time neither retrains nor retraces.
"""

import keras

from streamgen import checks
from streamgen import criteria
from streamgen.quiet import import_tensorflow
from streamgen.values import ConfigValue

tf = import_tensorflow()


@keras.saving.register_keras_serializable(package="streamgen")
class StopCriterion(ConfigValue):
    """Base class of stop criteria.

    Subclasses implement `fires(frame, stop_logit, threshold)` with TensorFlow
    ops and return a boolean `(batch,)` tensor. Everything in `get_config()`
    except `threshold` is part of the criterion's *kind* (see `kind()`), and a
    new kind compiles a new decoding graph; thresholds do not.

    Args:
        threshold: A finite or infinite float (not NaN).
    """

    def __init__(self, threshold):
        self.threshold = checks.check_threshold(type(self).__name__, threshold)

    def fires(self, frame, stop_logit, threshold):
        """Whether this inner step is the STOP token, per row.

        Args:
            frame: float tensor `(batch, output_size)`, the frame `y[i, j]`.
            stop_logit: float tensor `(batch,)`, the stop head's logit.
            threshold: float tensor `(batch,)`, this criterion's threshold
                for each row (rows may differ), or a scalar.

        Returns:
            A bool tensor of shape `(batch,)`.
        """
        raise NotImplementedError

    def kind(self):
        """A hashable key of everything but the threshold."""
        config = {k: v for k, v in self.get_config().items() if k != "threshold"}
        return (type(self).__name__, tuple(sorted(config.items())))

    def get_config(self):
        return {"threshold": self.threshold}


@keras.saving.register_keras_serializable(package="streamgen")
class StopHead(StopCriterion):
    """STOP when the learned stop head's probability exceeds `threshold`.

    `p[i, j] = sigmoid(stop_logit)`; the step is the STOP token when
    `p > threshold`. A threshold of 1.0 never fires.

    Args:
        threshold: float in `[0, 1]`. Defaults to 0.5.

    Example:

    >>> sg.StopHead(threshold=0.7)
    StopHead(threshold=0.7)
    """

    def __init__(self, threshold=0.5):
        super().__init__(threshold)  # a probability in [0, 1]

    def fires(self, frame, stop_logit, threshold):
        return tf.sigmoid(stop_logit) > threshold


@keras.saving.register_keras_serializable(package="streamgen")
class L2Norm(StopCriterion):
    """STOP on the L2 norm of the frame.

    With `mode="above"` the step is the STOP token when
    `||y[i, j]||_2 > threshold`; with `mode="below"`, when it is
    `< threshold`. `L2Norm(0.0, "above")` stops every row at once (only
    empty outputs); `L2Norm(float("inf"))` never fires.

    Args:
        threshold: non-negative float, may be `inf`. Defaults to 3.0.
        mode: `"above"` or `"below"`.
    """

    def __init__(self, threshold=3.0, mode="above"):
        super().__init__(threshold)  # non-negative
        if mode not in criteria.CRITERION_OPTIONS["L2Norm"]["mode"]:
            raise checks.invalid("mode", "'above' or 'below'", mode, "L2Norm")
        self.mode = mode

    def fires(self, frame, stop_logit, threshold):
        norm = tf.norm(frame, axis=-1)  # (B,)
        return norm > threshold if self.mode == "above" else norm < threshold

    def get_config(self):
        return {"threshold": self.threshold, "mode": self.mode}


@keras.saving.register_keras_serializable(package="streamgen")
class StopSample(StopCriterion):
    """A sampled STOP: fires with probability `sigmoid(stop_logit / temperature)`.

    At each inner step the stream draws `u` in `(0, 1)` (column 0 of the
    step's draws, see `sg.samplers`) from its seed and position, and the
    step is the STOP token when `u < sigmoid(stop_logit / temperature)`.
    Streams with the same input then get lengths that follow the stop
    head's probabilities instead of one length. The temperature is this
    criterion's per-row number (its `threshold`: fed to the compiled step
    as a tensor, changing it never retraces).

    Args:
        temperature: positive finite float. Defaults to 1.0; below 1 the
            decision is sharper (towards `StopHead(0.5)`), above 1 flatter.

    Example:

    >>> sg.StopSample(temperature=0.5)
    StopSample(temperature=0.5)
    """

    def __init__(self, temperature=1.0):
        self.temperature = checks.check_temperature("StopSample", temperature)

    @property
    def threshold(self):
        """The per-row number of the compiled step: the temperature."""
        return self.temperature

    def fires(self, frame, stop_logit, threshold, u=None):
        """`u < sigmoid(stop_logit / threshold)`, per row.

        Args:
            frame: float tensor `(batch, output_size)` (unused).
            stop_logit: float tensor `(batch,)`.
            threshold: float tensor `(batch,)` or scalar: the temperature.
            u: float tensor `(batch,)` in `(0, 1)`, the step's stop draw.

        Raises:
            ValueError: without `u` (a sampled STOP needs its draw).
        """
        if u is None:
            raise ValueError(
                "StopSample needs the step's uniform draw `u` (the stream's "
                "random numbers); this decoder does not provide it."
            )
        return u < tf.sigmoid(stop_logit / threshold)

    def kind(self):
        return ("StopSample", ())

    def get_config(self):
        return {"temperature": self.temperature}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "threshold" in config and "temperature" not in config:
            config["temperature"] = config.pop("threshold")
        return cls(**config)


def normalize_stop(stop):
    """Turns a `stop=` argument into a tuple of `StopCriterion`.

    Args:
        stop: a `StopCriterion`, a list/tuple of them ("any of"), `[]` (the
            cap alone), or a serialized criterion / list of them (from a
            config).

    Returns:
        A tuple of `StopCriterion` instances.

    Raises:
        TypeError: if an element is not a stop criterion.
    """
    objects = []
    for item in criteria.stop_items(stop, lambda s: isinstance(s, (StopCriterion, dict))):
        if isinstance(item, dict) and str(item.get("class_name")).split(">")[-1] in _BUILT_IN:
            item = criteria.check_criterion_dict(item)
            item = _BUILT_IN[item["class_name"]].from_config(item["config"])
        elif isinstance(item, dict):  # a criterion class of the user's
            item = keras.saving.deserialize_keras_object(item)
        if not isinstance(item, StopCriterion):
            raise criteria.bad_stop_item(item)
        objects.append(item)
    return tuple(objects)


_BUILT_IN = {"StopHead": StopHead, "L2Norm": L2Norm, "StopSample": StopSample}


def criteria_kind(criteria):
    """The compile key of a tuple of criteria: their kinds, in order."""
    return tuple(c.kind() for c in criteria)


def resolve_stop(default, stop):
    """`stop=None` -> `default`; anything else through `normalize_stop`."""
    return tuple(default) if stop is None else normalize_stop(stop)
