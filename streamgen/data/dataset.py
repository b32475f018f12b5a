"""Training data: ragged targets <-> padded tensors + masks, tf.data.

A data set is N sequences. Sequence `n` has `T_n >= 1` outer steps; at outer
step `t` it has an input vector `x[n][t]` (`input_size`) and a target
`Out[n][t]` of `L = 0..max_steps` frames (`output_size` each).

In memory:

- `inputs`: a list of N float arrays `(T_n, input_size)`, or one array
  `(N, T, input_size)`.
- `targets`: a list of N lists of `T_n` float arrays `(L, output_size)`
  (an empty `Out` may be `[]` or a `(0, output_size)` array), or a
  `tf.RaggedTensor` `(N, T, None, output_size)`.

Padded (what the model trains on, `M = max_steps`): `frames`
`(N, T_max, M, output_size)`, `lengths` `(N, T_max)` and the masks of the
STOP-token scheme (see `masks_from_lengths`).

On disk: JSON Lines, see `streamgen.data.jsonl`. Validation and the flat form
(`steps`, `rows`, `lengths`, `frames`) are in `streamgen.data.ragged`.
"""

import collections

import numpy as np

from streamgen import checks
from streamgen.data import jsonl
from streamgen.data import ragged
from streamgen.quiet import import_tensorflow

tf = import_tensorflow()

__all__ = [
    "pad_targets",
    "masks_from_lengths",
    "make_dataset",
    "jsonl_dataset",
    "jsonl_error",
    "jsonl_shards",
    "shard_sizes",
    "ragged_from_padded",
    "targets_from_ragged",
]


# --------------------------------------------------------------------------
# Public API.


# Public here since round 1; numpy only, so it lives with the ragged helpers.
pad_targets = ragged.pad_targets


def masks_from_lengths(lengths, outer_mask, max_steps):
    """Frame mask, STOP labels and STOP mask for given lengths.

    With `L = lengths[..., None]` and `j = 0 .. max_steps - 1`:
    `frame_mask = j < L` (frames that are emitted), `stop_labels = j == L`
    (the STOP token; none when `L == max_steps`), `stop_mask = j <= L`
    (steps whose stop decision is trained). All three are zero where
    `outer_mask` is 0.

    Args:
        lengths: int array or tensor `(..., T)`, values in `0..max_steps`.
        outer_mask: array or tensor `(..., T)`, 1 on real outer steps; None
            means all steps are real.
        max_steps: int, the cap `M`.

    Returns:
        `(frame_mask, stop_labels, stop_mask)`, each float32 `(..., T, M)`:
        numpy arrays for numpy input, tensors if either argument is a tensor.

    Raises:
        ValueError: (numpy input) a length outside `0..max_steps`.

    Example:

    >>> fm, sl, sm = masks_from_lengths(np.array([[1]]), None, 3)
    >>> fm.tolist(), sl.tolist(), sm.tolist()
    ([[[1.0, 0.0, 0.0]]], [[[0.0, 1.0, 0.0]]], [[[1.0, 1.0, 0.0]]])
    """
    max_steps = checks.check_max_steps(max_steps)
    if tf.is_tensor(lengths) or tf.is_tensor(outer_mask):
        L = tf.cast(lengths, tf.int32)[..., None]
        om = (
            tf.ones_like(L, tf.float32)
            if outer_mask is None
            else tf.cast(outer_mask, tf.float32)[..., None]
        )
        j = tf.range(max_steps, dtype=tf.int32)
        return tuple(tf.cast(c, tf.float32) * om for c in (j < L, tf.equal(j, L), j <= L))
    L = np.asarray(lengths)
    if L.size and (L.min() < 0 or L.max() > max_steps):
        raise ValueError(
            "Received an invalid value for argument `lengths`, expected values in "
            f"[0, max_steps={max_steps}], got values {L.min()}..{L.max()}."
        )
    L = L[..., None]
    om = (
        np.ones(L.shape, np.float32)
        if outer_mask is None
        else np.asarray(outer_mask, np.float32)[..., None]
    )
    j = np.arange(max_steps)
    return tuple((c * om).astype(np.float32) for c in (j < L, j == L, j <= L))


def make_dataset(
    inputs, targets, batch_size=32, shuffle=True, seed=None, *, max_steps=9, output_size=None
):
    """A `tf.data.Dataset` of padded, masked batches for teacher forcing.

    Each batch is padded to its own longest sequence `T` (the last batch may
    hold fewer than `batch_size` sequences). Only indices are shuffled;
    the data are gathered and padded per batch.

    Args:
        inputs: a list of N arrays `(T_n, input_size)` or one array
            `(N, T, input_size)`.
        targets: a list of N lists of `T_n` arrays `(L, output_size)`, or a
            `tf.RaggedTensor` `(N, T, None, output_size)`.
        batch_size: int, sequences per batch.
        shuffle: bool, reshuffle the sequences every epoch.
        seed: int or None; with a seed the order is the same on every run.
        max_steps: int, the cap `M` on frames per outer step.
        output_size: int or None; needed only if no target has a frame.

    Returns:
        A dataset of `(x, y)` dicts:
        `x = {"inputs": (B, T, I) float32, "frames": (B, T, M, O) float32,
        "lengths": (B, T) int32, "outer_mask": (B, T) float32}` and
        `y = {"frames": (B, T, M, O), "frame_mask": (B, T, M),
        "stop_labels": (B, T, M), "stop_mask": (B, T, M)}` (all float32).

    Raises:
        ValueError: inputs and targets disagree (N, T per sequence), widths
            are inconsistent, a value is not finite, a length exceeds
            `max_steps` or a sequence is empty; the message names the
            argument, sequence and outer step, e.g.
            `targets[3][5] has 12 frames, more than max_steps=9`.

    Example:

    >>> ds = make_dataset([np.zeros((4, 3))], [[np.zeros((2, 2))] * 4])
    >>> x, y = next(iter(ds))
    >>> x["frames"].shape
    TensorShape([1, 4, 9, 2])
    """
    max_steps = checks.check_max_steps(max_steps)
    batch_size = checks.positive_int("batch_size", batch_size)
    flat_x = ragged.flatten_inputs(inputs)
    flat_y = ragged.flatten_targets(targets, output_size)
    ragged.check_pair(flat_x, flat_y)
    ragged.check_lengths(flat_y, max_steps)
    steps = flat_x.steps
    count, I, O = len(steps), flat_x.rows.shape[1], flat_y.frames.shape[1]

    xr = tf.RaggedTensor.from_row_lengths(flat_x.rows, steps)
    fr = tf.RaggedTensor.from_row_lengths(
        ragged.step_frames(flat_y.lengths, flat_y.frames, max_steps), steps)
    lr = tf.RaggedTensor.from_row_lengths(flat_y.lengths.astype(np.int32), steps)

    def batch(idx):
        inputs = tf.ensure_shape(tf.gather(xr, idx).to_tensor(), [None, None, I])
        frames = tf.ensure_shape(tf.gather(fr, idx).to_tensor(), [None, None, max_steps, O])
        rows = tf.gather(lr, idx)
        return _teacher_forcing_batch(inputs, frames, rows.to_tensor(), rows.row_lengths(),
                                      max_steps)

    ds = tf.data.Dataset.range(count)
    if shuffle:
        ds = ds.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(batch).prefetch(tf.data.AUTOTUNE)


def _teacher_forcing_batch(inputs, frames, lengths, steps, max_steps):
    """The `(x, y)` dicts of one padded batch (see `make_dataset`).

    Args:
        inputs: `(B, T, I)`; frames: `(B, T, M, O)`; lengths: int `(B, T)`,
        0 on padded steps; steps: int `(B,)`, real outer steps per row.
    """
    outer_mask = tf.sequence_mask(steps, tf.shape(lengths)[1], tf.float32)  # (B, T)
    frame_mask, stop_labels, stop_mask = masks_from_lengths(lengths, outer_mask, max_steps)
    x = {"inputs": inputs, "frames": frames, "lengths": lengths, "outer_mask": outer_mask}
    y = {
        "frames": frames,
        "frame_mask": frame_mask,
        "stop_labels": stop_labels,
        "stop_mask": stop_mask,
    }
    return x, y


# Messages of the `ValueError`s raised inside `jsonl_dataset` pipelines (TensorFlow
# re-raises them wrapped in its own error; see `jsonl_error`).
_RAISED = collections.deque(maxlen=64)


def jsonl_dataset(paths, batch_size=32, *, shuffle_buffer=0, seed=None, max_steps=9,
                  input_size=None, output_size=None, cycle_length=4, shard=None):
    """A `tf.data.Dataset` of padded, masked batches streamed from JSONL files.

    The files are read a line at a time (never whole), `cycle_length` of
    them interleaved, so data larger than memory trains in constant memory.
    Records are checked as `sg.load_jsonl` checks them, and the batches are
    those of `sg.make_dataset`: with `shuffle_buffer=0` and one file, the
    same batches, value for value, as `make_dataset(*load_jsonl(path),
    batch_size, shuffle=False)`. Each epoch reads the files again.

    Args:
        paths: a JSONL file, a glob pattern, or a list of them.
        batch_size: int, sequences per batch.
        shuffle_buffer: int; > 0 shuffles the order of the files and the
            records through a buffer of this many (reshuffled each epoch);
            0 keeps the order.
        seed: int or None; with a seed the order is the same on every run.
        max_steps: int, the cap `M` on frames per outer step.
        input_size, output_size: int or None; read from the first records
            when not given.
        cycle_length: int, files read at the same time (interleaved).
        shard: None, or `(index, count)`: only the share `index` of `count`
            (one worker's of data-parallel training; see `jsonl_shards`).
            The shares `0 .. count - 1` hold every record once.

    Returns:
        A dataset of `(x, y)` dicts, as `sg.make_dataset`.

    Raises:
        FileNotFoundError: a missing file or a pattern without matches.
        ValueError: (at once) no record, or a malformed record before the
            first frame; (while iterating) TensorFlow's
            `InvalidArgumentError` whose message holds the `ValueError`
            of a malformed record, `"{path}:{line}: {what}"`; `jsonl_error`
            recovers it.

    Example:

    >>> ds = sg.jsonl_dataset(["samples/train.jsonl", "samples/valid.jsonl"], 32, shuffle_buffer=10_000, seed=0)
    >>> x, y = next(iter(ds))
    >>> x["inputs"].shape, y["stop_labels"].shape
    (TensorShape([32, 16, 3]), TensorShape([32, 16, 9]))
    >>> model.fit(ds, epochs=10)  # doctest: +SKIP
    """
    max_steps = checks.check_max_steps(max_steps)
    batch_size = checks.positive_int("batch_size", batch_size)
    shuffle_buffer = checks.check_count("shuffle_buffer", shuffle_buffer)
    cycle_length = checks.positive_int("cycle_length", cycle_length)
    files = jsonl.expand_paths(paths)
    if shard is None:
        pieces = [(path, 0, -1, 1) for path in files]
    else:
        index, count = _check_shard(shard)
        pieces = jsonl_shards(files, count)[index]
    widths = jsonl.peek_widths(files, max_steps=max_steps, input_size=input_size,
                               output_size=output_size)
    I, O = widths.size["x"], widths.size["y"]

    def chunks(path, start, end, first_line):
        # Records in flat chunks (one Python call per chunk, not per record).
        try:
            chunk = []
            for record in jsonl.read_range(path.decode("utf-8"), int(start),
                                           None if end < 0 else int(end), int(first_line),
                                           widths=widths, max_steps=max_steps):
                chunk.append(record)
                if len(chunk) == _CHUNK:
                    yield _flat_chunk(chunk, max_steps)
                    chunk = []
            if chunk:
                yield _flat_chunk(chunk, max_steps)
        except ValueError as error:
            _RAISED.append(str(error))
            raise

    signature = (tf.TensorSpec([None, I], tf.float32), tf.TensorSpec([None], tf.int32),
                 tf.TensorSpec([None, max_steps, O], tf.float32),
                 tf.TensorSpec([None], tf.int64))

    def records(path, start, end, first_line):
        flat = tf.data.Dataset.from_generator(chunks, args=(path, start, end, first_line),
                                              output_signature=signature)
        return flat.map(_unflatten).unbatch()  # one element per record

    ds = tf.data.Dataset.from_tensor_slices(
        tuple(list(column) for column in zip(*pieces)) if pieces
        else ([""], [0], [0], [1])).take(len(pieces))
    if shuffle_buffer:
        ds = ds.shuffle(len(pieces), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(records, cycle_length=max(1, min(cycle_length, len(pieces))),
                       block_length=1)
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda x, lengths, frames: (x, lengths, frames, tf.shape(lengths)[0]))
    ds = ds.padded_batch(batch_size)
    # The number of batches, from the number of non-blank lines (a scan, no
    # parsing): Keras then knows an epoch's length.
    records = sum(_count_records(*piece[:3]) for piece in pieces)
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-records // batch_size)))

    def batch(inputs, lengths, frames, steps):
        return _teacher_forcing_batch(inputs, frames, lengths, steps, max_steps)

    return ds.map(batch).prefetch(tf.data.AUTOTUNE)


_CHUNK = 256  # records per call of a file's reader


def _count_records(path, start=0, end=-1):
    """Non-blank lines of a file, or of its byte range `[start, end)` (`end < 0`:
    to the end): each is a record, or an error when read."""
    with jsonl.open_binary(path) as fh:  # blank as `jsonl.read_range` sees it (.gz too)
        if start:
            fh.seek(start)  # a range: a plain file (see `jsonl_shards`)
        lines = fh if end < 0 else jsonl._upto(fh, end - start)
        return sum(1 for line in lines
                   if line.decode("utf-8", "replace").lstrip("\ufeff").strip())


def _check_shard(shard):
    try:
        index, count = (int(v) for v in shard)
        ok = 0 <= index < count and tuple(shard) == (index, count)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise checks.invalid("shard", "a pair (index, count) with 0 <= index < count",
                              shard)
    return index, count


def jsonl_shards(paths, count):
    """Cuts JSONL files into `count` shares, one per worker of data-parallel training.

    With at least `count` files, share `i` is the files `files[i::count]`;
    with fewer, each file is cut into `count` ranges of whole lines
    (`jsonl.line_ranges`) and share `i` is the `i`-th range of every file.
    Either way every record is in exactly one share.

    Args:
        paths: a JSONL file, a glob pattern, or a list of them.
        count: int, the number of shares.

    Returns:
        A list of `count` lists of pieces `(path, start, end, first_line)`:
        byte ranges (`end = -1`: to the end of the file) and the number of
        the range's first line (for error messages).
    """
    count = checks.positive_int("count", count)
    files = jsonl.expand_paths(paths)
    if len(files) >= count:
        return [[(path, 0, -1, 1) for path in files[i::count]] for i in range(count)]
    shares = [[] for _ in range(count)]
    for path in files:
        with open(path, "rb") as fh:
            lines = sum(1 for _ in fh)
        ranges = jsonl.line_ranges(path, max(1, -(-lines // count)))
        for i, (start, end, first_line) in enumerate(ranges[:count]):
            shares[i].append((path, start, end, first_line))
    return shares


def shard_sizes(paths, count):
    """The number of records in each share of `jsonl_shards(paths, count)`."""
    return [sum(_count_records(*piece[:3]) for piece in share)
            for share in jsonl_shards(paths, count)]


def _flat_chunk(records, max_steps):
    """A chunk of records as flat arrays: rows, lengths, step frames, steps."""
    lengths = np.concatenate([r.lengths for r in records])  # (S,)
    frames = np.concatenate([r.frames for r in records])  # (F, O)
    return (np.concatenate([r.inputs for r in records]), lengths,
            ragged.step_frames(lengths, frames, max_steps),
            np.array([len(r.inputs) for r in records], np.int64))


def _unflatten(rows, lengths, frames, steps):
    """Flat chunk -> ragged `(K, None, ...)` tensors, one row per record."""
    return (tf.RaggedTensor.from_row_lengths(rows, steps),
            tf.RaggedTensor.from_row_lengths(lengths, steps),
            tf.RaggedTensor.from_row_lengths(frames, steps))


def jsonl_error(error):
    """The `ValueError` of a malformed record inside a TensorFlow error, or None.

    Args:
        error: an exception raised while iterating a `jsonl_dataset`
            (TensorFlow wraps the reader's errors in its own).

    Returns:
        `ValueError("{path}:{line}: {what}")`, or None if `error` did not
        come from a malformed record.
    """
    text = str(getattr(error, "message", error))
    for message in reversed(_RAISED):
        if message in text:
            return ValueError(message)
    return None


def ragged_from_padded(frames, lengths):
    """Turns padded frames back into a ragged tensor.

    Args:
        frames: array or tensor `(N, T, M, O)`.
        lengths: int array or tensor `(N, T)`, frames kept per outer step.

    Returns:
        A `tf.RaggedTensor` `(N, T, None, O)`: `rt[n, t]` is
        `frames[n, t, :lengths[n, t]]`.
    """
    frames = tf.convert_to_tensor(frames)
    lengths = tf.cast(lengths, tf.int64)
    shape = tf.shape(frames, out_type=tf.int64)
    flat = tf.reshape(frames, tf.concat([[-1], shape[2:]], 0))
    inner = tf.RaggedTensor.from_tensor(flat, lengths=tf.reshape(lengths, [-1]))
    return tf.RaggedTensor.from_uniform_row_length(inner, shape[1])


def targets_from_ragged(rt):
    """Turns a ragged tensor `(N, T, None, O)` into nested lists of arrays.

    Args:
        rt: a `tf.RaggedTensor` `(N, T, None, O)`.

    Returns:
        A list of N lists of `T_n` numpy arrays `(L, O)`.
    """
    flat = ragged.ragged_parts(rt)
    outs = ragged.split(flat.frames, flat.lengths)
    ends = np.cumsum(flat.steps)
    return [outs[end - count:end] for count, end in zip(flat.steps, ends)]
