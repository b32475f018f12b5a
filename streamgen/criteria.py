"""Stop criteria in their one library form, and the per-row settings of the built-in kinds.

Inside the library a stop criterion is a dict, `{"class_name": "StopHead",
"config": {"threshold": 0.5}}` (TF-free: `sg.LiteStream` and the server
run without TensorFlow). `sg.StopCriterion` objects are what users write;
they are converted at the edges (`criterion_dict`, `as_dicts`).

Every runtime (TensorFlow and LiteRT, `.tflite` exports included) is
compiled with the four built-in kinds of stop criteria at once, so that
streams with any mix of them share one compiled step (one trace, one call).
A row's stop settings are its *thresholds*, float32 `(K,)`:

| column | kind | fires when | off |
| --- | --- | --- | --- |
| 0 | `StopHead` | `sigmoid(stop_logit) > t` | `+inf` |
| 1 | `L2Norm(mode="above")` | `norm(frame) > t` | `+inf` |
| 2 | `L2Norm(mode="below")` | `norm(frame) < t` | `-inf` |
| 3 | `StopSample` | `u < sigmoid(stop_logit / t)` (`u`: the row's draw) | `+inf` |
| 4, ... | the runtime's own criterion classes | `criterion.fires(...)` | (none) |

A kind that a row does not use gets its "off" threshold, which no value
exceeds (comparisons with an infinity are exact on TensorFlow, XLA and
LiteRT alike). Several criteria of one kind fold into one threshold: the
smallest for `StopHead` and "above", the largest for "below", which fires
exactly when any of them does (for `StopSample`, whose threshold is its
temperature, the largest: several sampled STOPs on one draw are the
flattest of them). `[]` (the cap alone) is all four off.

Criterion classes that users write themselves have no known "off" value:
their kinds are fixed per runtime (the `stop=` it was opened or exported
with), after the four built-in columns, and every row's stop list must
hold them, in order (only their thresholds vary per row).

Numpy only (`sg.LiteStream` runs without TensorFlow).
"""

import numpy as np

from streamgen import checks
from streamgen.checks import invalid

# The compiled kinds, in column order (`criterion_kind` keys).
BUILT_IN_KINDS = (
    ("StopHead", ()),
    ("L2Norm", (("mode", "above"),)),
    ("L2Norm", (("mode", "below"),)),
    ("StopSample", ()),
)
COUNT = len(BUILT_IN_KINDS)
# The threshold of a kind that is off: it never fires.
OFF = np.array([np.inf, np.inf, -np.inf, np.inf], np.float32)
# The kinds compared with one signed comparison (`built_in_fires`); the
# sampled STOP (column `SAMPLE`) is tested against the row's draw.
COMPARED = 3
SAMPLE = 3
# +1: the kind fires above its threshold; -1: below (compiled as
# `-value > -threshold`, exactly `value < threshold`); the first
# `COMPARED` columns.
SIGNS = np.array([1.0, 1.0, -1.0], np.float32)


def is_built_in(criterion):
    """Whether a criterion dict is one of the built-in kinds."""
    return criterion_kind(criterion) in BUILT_IN_KINDS


def as_dicts(stop):
    """A `stop=` value (a criterion, a list of them, `[]`; objects or
    dicts) -> a list of checked criterion dicts."""
    is_one = lambda s: isinstance(s, dict) or hasattr(s, "get_config")  # noqa: E731
    return [criterion_dict(item) for item in stop_items(stop, is_one)]


def samples(thresholds):
    """Whether any row of `thresholds` `(B, K)` uses `StopSample`."""
    return bool(np.isfinite(np.asarray(thresholds)[:, SAMPLE]).any())


def custom_of(criteria):
    """The criteria (dicts) that are not of a built-in kind, in order."""
    return [c for c in criteria if not is_built_in(c)]


def thresholds_row(stop, custom, hint=""):
    """A row's thresholds `(COUNT + len(custom),)` for a stop list.

    Args:
        stop: the row's criteria: a criterion, a list of them or `[]`
            (`sg.StopCriterion` objects or their dicts).
        custom: the runtime's own (non-built-in) criteria, as dicts; the
            row must hold the same kinds, in the same order.
        hint: appended to the error about other custom kinds.

    Returns:
        float32 `(COUNT + len(custom),)`.

    Raises:
        TypeError, ValueError: a bad criterion, or custom kinds other than
            the runtime's.
    """
    criteria = as_dicts(stop)
    row = OFF.copy()
    for criterion in criteria:
        if not is_built_in(criterion):
            continue
        column = BUILT_IN_KINDS.index(criterion_kind(criterion))
        threshold = np.float32(criterion_value(criterion))
        if column == SAMPLE:  # +inf is off: any temperature replaces it
            row[column] = threshold if np.isinf(row[column]) else max(row[column], threshold)
            continue
        # the smallest "above" threshold (the largest "below") fires first
        row[column] = (min(row[column], threshold) if SIGNS[column] > 0
                       else max(row[column], threshold))
    own = custom_of(criteria)
    if [criterion_kind(c) for c in own] != [criterion_kind(c) for c in custom]:
        raise ValueError(
            "Received an invalid value for argument `stop`: the stop criteria of "
            f"non-built-in classes here are {describe_kinds(custom)}, got "
            f"{describe_kinds(own)}. Built-in criteria (StopHead, L2Norm, StopSample) "
            "can differ per stream; other classes are fixed." + (f" {hint}" if hint else ""))
    extra = np.array([criterion_value(c) for c in own], np.float32)
    return np.concatenate([row, extra.reshape([len(own)])]).astype(np.float32)


# ---------------------------------------------------------------------- #
# Criterion dicts.
# ---------------------------------------------------------------------- #
CRITERION_OPTIONS = {"StopHead": {}, "L2Norm": {"mode": ("above", "below")}, "StopSample": {}}
# The per-row number of a criterion (fed to the compiled step as a tensor):
# its `threshold`, or the temperature of `StopSample`.
VALUE_KEYS = {"StopSample": "temperature"}


def value_key(class_name):
    """The config key of a criterion's per-row number (`"threshold"` mostly)."""
    return VALUE_KEYS.get(class_name, "threshold")


def criterion_value(criterion):
    """A criterion dict's per-row number: its threshold or temperature."""
    return criterion["config"][value_key(criterion["class_name"])]


def check_criterion_dict(item):
    """A serialized criterion `{"class_name", "config"}`, checked and copied.

    For the classes that ship with streamgen (`StopHead`, `L2Norm`; a
    `"streamgen>"` prefix is accepted) the options and threshold are
    checked as the classes do. A criterion class of the user's (a subclass
    of `sg.StopCriterion`) needs a numeric `threshold`; its other options
    must be plain JSON values.

    Raises:
        TypeError: not a dict of that form.
        ValueError: an unknown option or a bad value.
    """
    if not isinstance(item, dict) or not isinstance(item.get("class_name"), str):
        raise bad_stop_item(item)
    class_name = item["class_name"].split(">")[-1]
    config = item.get("config", {})
    if not isinstance(config, dict):
        raise invalid("config", "a dict", config, class_name)
    options = CRITERION_OPTIONS.get(class_name)
    if class_name == "StopSample":
        config = dict(config)
        if "threshold" in config and "temperature" not in config:
            config["temperature"] = config.pop("threshold")
        unknown = sorted(set(config) - {"temperature"})
        if unknown:
            raise invalid("config", "only the key 'temperature'", config, class_name)
        return {"class_name": class_name, "config": {
            "temperature": checks.check_temperature(class_name, config.get("temperature", 1.0))}}
    if options is None:  # the user's own criterion class
        if "threshold" not in config or not all(
                isinstance(v, (str, int, float, bool, type(None))) for v in config.values()):
            raise invalid("config", "a threshold and plain JSON options", config, class_name)
        return {"class_name": class_name,
                "config": {**config, "threshold": checks.check_threshold(class_name, config["threshold"])}}
    unknown = sorted(set(config) - {"threshold"} - set(options))
    if unknown:
        raise invalid("config", f"only the keys {['threshold', *options]}", config,
                      class_name)
    checked = {"threshold": checks.check_threshold(
        class_name, config.get("threshold", 0.5 if class_name == "StopHead" else 3.0))}
    for option, allowed in options.items():
        value = config.get(option, allowed[0])
        if value not in allowed:
            raise invalid(option, " or ".join(repr(a) for a in allowed), value, class_name)
        checked[option] = value
    return {"class_name": class_name, "config": checked}


def criterion_dict(criterion):
    """A `sg.StopCriterion` (or its dict) -> `{"class_name", "config"}`."""
    if isinstance(criterion, dict):
        return check_criterion_dict(criterion)
    if hasattr(criterion, "get_config") and hasattr(criterion, "threshold"):
        return {"class_name": type(criterion).__name__, "config": dict(criterion.get_config())}
    raise bad_stop_item(criterion)


def criterion_kind(criterion):
    """A criterion dict's kind: everything but the threshold, hashable."""
    key = value_key(criterion["class_name"])
    config = {k: v for k, v in criterion["config"].items() if k != key}
    return (criterion["class_name"], tuple(sorted(config.items())))


def describe_criteria(criteria):
    """`[StopHead(threshold=0.5), L2Norm(mode='above', threshold=3.0)]`."""
    parts = []
    for c in criteria:
        options = ", ".join(f"{k}={v!r}" for k, v in sorted(c["config"].items()))
        parts.append(f"{c['class_name']}({options})")
    return "[" + ", ".join(parts) + "]"


def describe_kinds(criteria):
    """Like `describe_criteria`, without the thresholds."""
    return describe_criteria(
        [{"class_name": c["class_name"],
          "config": {k: v for k, v in c["config"].items() if k != value_key(c["class_name"])}}
         for c in criteria])


def same_kind_criteria(stop, fixed, hint=""):
    """Checks a `stop=` override against criteria whose kinds are fixed.

    Args:
        stop: `None`, a criterion (a `sg.StopCriterion` or its dict), or a
            list of them.
        fixed: the criteria whose kinds must be kept, as dicts.
        hint: a sentence appended to the error: how to change the kinds.

    Returns:
        A list of criterion dicts (copies).

    Raises:
        TypeError: if an element is not a stop criterion.
        ValueError: if a threshold is invalid, or the kinds differ.
    """
    if stop is None:
        return [{"class_name": c["class_name"], "config": dict(c["config"])} for c in fixed]
    is_one = lambda s: isinstance(s, dict) or hasattr(s, "get_config")  # noqa: E731
    criteria = [criterion_dict(item) for item in stop_items(stop, is_one)]
    if [criterion_kind(c) for c in criteria] != [criterion_kind(c) for c in fixed]:
        raise ValueError(
            "Received an invalid value for argument `stop`: the stop criteria "
            f"here are {describe_kinds(fixed)}, got {describe_kinds(criteria)}. "
            "Only thresholds can change." + (f" {hint}" if hint else "")
        )
    return criteria


# ---------------------------------------------------------------------- #
# Step arguments.
# ---------------------------------------------------------------------- #


def stop_items(stop, is_single):
    """A `stop=` argument as a list of its elements (not yet checked).

    Args:
        stop: one criterion, a list/tuple of them, or `[]`.
        is_single: callable, True for one criterion (not a list).

    Raises:
        TypeError: if `stop` is neither a criterion nor a list/tuple.
    """
    if is_single(stop):
        return [stop]
    if not isinstance(stop, (list, tuple)):
        raise TypeError(
            "Received an invalid value for argument `stop`, expected a stop "
            "criterion (e.g. sg.StopHead(0.5)), a list of them, or [], "
            f"got {stop!r}."
        )
    return list(stop)


def bad_stop_item(item):
    """The `TypeError` for an element of `stop=` that is not a criterion."""
    return TypeError(
        "Received an invalid element in argument `stop`, expected a "
        f"stop criterion such as sg.StopHead or sg.L2Norm, got {item!r}."
    )
