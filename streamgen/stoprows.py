"""Per-row stop settings: the built-in kinds that every runtime compiles.

Every runtime (TensorFlow and LiteRT, `.tflite` exports included) is
compiled with the three built-in kinds of stop criteria at once, so that
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
flattest of them). `[]` (the cap alone) is all three off.

Criterion classes that users write themselves have no known "off" value:
their kinds are fixed per runtime (the `stop=` it was opened or exported
with), after the three built-in columns, and every row's stop list must
hold them, in order (only their thresholds vary per row).

Numpy only (`sg.LiteStream` runs without TensorFlow).
"""

import numpy as np

from streamgen import checks

# The compiled kinds, in column order (`checks.criterion_kind` keys).
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
    return checks.criterion_kind(criterion) in BUILT_IN_KINDS


def as_dicts(stop):
    """A `stop=` value (a criterion, a list of them, `[]`; objects or
    dicts) -> a list of checked criterion dicts."""
    is_one = lambda s: isinstance(s, dict) or hasattr(s, "get_config")  # noqa: E731
    return [checks.criterion_dict(item) for item in checks.stop_items(stop, is_one)]


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
        column = BUILT_IN_KINDS.index(checks.criterion_kind(criterion))
        threshold = np.float32(checks.criterion_value(criterion))
        if column == SAMPLE:  # +inf is off: any temperature replaces it
            row[column] = threshold if np.isinf(row[column]) else max(row[column], threshold)
            continue
        # the smallest "above" threshold (the largest "below") fires first
        row[column] = (min(row[column], threshold) if SIGNS[column] > 0
                       else max(row[column], threshold))
    own = custom_of(criteria)
    if [checks.criterion_kind(c) for c in own] != [checks.criterion_kind(c) for c in custom]:
        raise ValueError(
            "Received an invalid value for argument `stop`: the stop criteria of "
            f"non-built-in classes here are {checks.describe_kinds(custom)}, got "
            f"{checks.describe_kinds(own)}. Built-in criteria (StopHead, L2Norm) "
            "can differ per stream; other classes are fixed." + (f" {hint}" if hint else ""))
    extra = np.array([checks.criterion_value(c) for c in own], np.float32)
    return np.concatenate([row, extra.reshape([len(own)])]).astype(np.float32)
