"""How well sampled lengths match the data: `length_tv` and `sampled_length_tv`.

A model that samples (a random sampler, `sg.StopSample`) gives a different
`len(Out[t])` each time; what should match the data is the *distribution*
of lengths, not each one. The figure is the total-variation distance
between the histogram of the true lengths and that of the lengths of
several sampled decodings of the same inputs: 0 for the same histogram, 1
for histograms with no length in common.

Numpy only (a `.tflite` model is evaluated without TensorFlow).
"""

import numpy as np

from streamgen import checks
from streamgen.data import ragged
from streamgen.offline import decode as offline


def length_tv(true_lengths, sampled_lengths, max_steps):
    """Total-variation distance between two histograms of lengths.

    `0.5 * sum_l |p(l) - q(l)|` over the lengths `l = 0 .. max_steps`,
    where `p` and `q` are the shares of `true_lengths` and
    `sampled_lengths` equal to `l`: 0 when the two have the same
    histogram, 1 when they share no length. The two may hold different
    numbers of lengths (e.g. several samples per true one).

    Args:
        true_lengths: int array-like of any shape, the lengths of the data
            (each in `[0, max_steps]`).
        sampled_lengths: int array-like of any shape, the sampled lengths.
        max_steps: positive int, the largest possible length (the cap).

    Returns:
        A Python float in `[0, 1]`.

    Raises:
        ValueError: an empty array, or a length outside `[0, max_steps]`.

    Example:

    >>> from streamgen.offline.evaluation import length_tv
    >>> length_tv([1, 2, 2, 3], [2, 2, 3, 3], max_steps=4)
    0.25
    """
    max_steps = checks.positive_int("max_steps", max_steps)
    shares = []
    for name, lengths in (("true_lengths", true_lengths), ("sampled_lengths", sampled_lengths)):
        lengths = np.asarray(lengths).reshape(-1)
        if lengths.size == 0:
            raise checks.invalid(name, "at least one length", [])
        if not np.issubdtype(lengths.dtype, np.integer):
            raise checks.invalid(name, f"integers in [0, {max_steps}]", lengths.dtype.name)
        bad = lengths[(lengths < 0) | (lengths > max_steps)]
        if bad.size:
            raise checks.invalid(name, f"integers in [0, {max_steps}]", int(bad[0]))
        shares.append(np.bincount(lengths, minlength=max_steps + 1) / lengths.size)
    return float(0.5 * np.abs(shares[0] - shares[1]).sum())


def sampled_length_tv(model, inputs, targets, samples, *, stop=None, sampler=None, seed=None,
                      batch_size=256):
    """`length_tv` between the data's lengths and those of `samples` decodings.

    The inputs are decoded `samples` times (`sg.decode_sequences` of the
    inputs repeated: copy `s` of sequence `n` is record `s * N + n`, seed
    `randomness.derive_seed(seed, s * N + n)`), so every copy draws other
    numbers and the figure is the same whatever `batch_size`.

    Args:
        model: a `sg.StreamGen`, a `sg.Runtime` or a `.keras` / `.tflite`
            path.
        inputs: a list of N arrays `(T_n, input_size)` or one array
            `(N, T, input_size)`.
        targets: a list of N lists of `T_n` arrays `(L, output_size)`, or a
            `tf.RaggedTensor` `(N, T, None, output_size)`.
        samples: positive int, decodings of the inputs.
        stop: stop criteria (`None`: the model's); not with a runtime.
        sampler: how frames are drawn (`sg.samplers`); `None`: the model's
            (or the runtime's).
        seed: int in `[0, 2**32)`; `None`: a fresh one.
        batch_size: positive int, sequences decoded together.

    Returns:
        A Python float in `[0, 1]` (see `length_tv`; the lengths compared
        are those of every real outer step).

    Raises:
        ValueError: inputs and targets that do not match, a bad `samples`.

    Example:

    >>> from streamgen.offline.evaluation import sampled_length_tv
    >>> inputs, targets = sg.load_jsonl("samples/valid.jsonl")
    >>> tv = sampled_length_tv(sg.load_default(), inputs, targets, 2, seed=0)
    >>> 0.0 <= tv <= 1.0
    True
    """
    samples = checks.positive_int("samples", samples)
    runtime = offline.as_runtime(model, stop, sampler=sampler)
    flat_x = ragged.flatten_inputs(inputs)
    flat_y = ragged.flatten_targets(targets, runtime.output_size)
    if len(flat_x.steps) != len(flat_y.steps) or np.any(flat_x.steps != flat_y.steps):
        raise ValueError(
            "Received inputs and targets that do not match: "
            f"{len(flat_x.steps)} input sequences of {flat_x.steps.tolist()[:8]} steps, "
            f"{len(flat_y.steps)} target sequences of {flat_y.steps.tolist()[:8]} steps.")
    cap = runtime.trained_max_steps
    ragged.check_lengths(flat_y, cap)
    sequences = ragged.split(flat_x.rows, flat_x.steps)
    outs = offline.decode_sequences(runtime, sequences * samples, batch_size=batch_size,
                                    seed=seed)
    sampled = np.array([len(out) for sequence in outs for out in sequence], np.int64)
    return length_tv(flat_y.lengths, sampled, cap)
