"""Offline decoding: many whole sequences at once, thousands of rows per call.

Streaming (`sg.Stream`) pays the framework's overhead once per outer step of
one stream. Offline, every sequence is known in advance, so a batch of `B`
sequences padded to `T` steps costs `T` batched steps (LiteRT) or one graph
call (TensorFlow: the whole outer loop runs inside one graph), and
the overhead is spread over `B` rows. Decoding is causal, so padding at the
end of a sequence never changes its real steps.

- `decode_padded(runtime, x, steps)`: one padded batch -> padded frames and
  lengths (the primitive; `sg.evaluate` stands on it).
- `length_batches(steps, batch_size)`: batches of similar length.
- `decode_sequences(model, inputs)`: in-memory sequences -> ragged `Out`s.
- `decode_jsonl(model, paths, out)`: JSONL files -> one JSONL line of `Out`
  per sequence, streamed in chunks (files of any size), in input order.

Nothing here imports TensorFlow: a `.tflite` export decodes on LiteRT alone.
"""

import json
import os
import queue
import threading

import numpy as np

from streamgen import checks
from streamgen import outputs
from streamgen import randomness
from streamgen.data import jsonl
from streamgen.data import text as jsontext
from streamgen.data import ragged
from streamgen import runtimes
from streamgen.runtimes.base import Runtime

__all__ = ["decode_jsonl", "decode_padded", "decode_sequences", "evaluate",
           "length_batches"]

DEFAULT_BATCH_SIZE = 4096


def as_runtime(model, stop=None, max_steps=None, jit_compile=False, sampler=None):
    """`sg.open_runtime` for offline decoding: a runtime, a `sg.StreamGen`
    or a model file path, with `stop`, `max_steps` and `sampler` applied.

    `jit_compile`: compile a TensorFlow model's step with XLA (offline
    decoding steps it with one fixed batch shape per batch, see
    `Runtime.run_sequences`); ignored for a `.tflite` file or a runtime
    already open.
    """
    options = {} if sampler is None else {"sampler": sampler}
    tflite = (isinstance(model, (str, os.PathLike))
              and os.fspath(model).lower().endswith(".tflite"))
    if jit_compile and not tflite and not isinstance(model, Runtime):
        options["jit_compile"] = True
    return runtimes.open_runtime(model, stop=stop, max_steps=max_steps, **options)


def length_batches(steps, batch_size):
    """Splits sequences into batches of similar length.

    Args:
        steps: int array `(N,)`, outer steps per sequence.
        batch_size: positive int, sequences per batch.

    Returns:
        A list of int index arrays, each of at most `batch_size` sequences:
        the indices sorted by length (stable), cut in order.

    Example:

    >>> [b.tolist() for b in length_batches(np.array([3, 1, 2]), 2)]
    [[1, 2], [0]]
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    order = np.argsort(np.asarray(steps), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def decode_padded(runtime, x, steps=None, lengths=None, seeds=None):
    """Decodes a padded batch of whole sequences from fresh state.

    Args:
        runtime: a `sg.Runtime` (its stop criteria and cap apply).
        x: float array `(B, T, input_size)`, sequences padded at the end.
        steps: optional int array `(B,)`, the real steps of each row
            (`T` for all when `None`).
        lengths: optional int array `(B, T)`: force these lengths (the
            STOP token at step `lengths[b, t]`, as `model.decode(x,
            lengths=...)`). See `Runtime.run_sequences`: the same results
            on every runtime.
        seeds: optional int array `(B,)`, each row's seed (its random
            numbers when the runtime samples: a random sampler or
            `sg.StopSample`); `None`: seed 0. Row `b` equals a stream of
            seed `seeds[b]`, whatever the other rows.

    Returns:
        `(frames, lengths)`: float32 `(B, T, trained_max_steps,
        output_size)`, zero past each length; int32 `(B, T)`, 0 on padded
        steps. Row `b`'s `Out[t]` is `frames[b, t, :lengths[b, t]]`.

    Raises:
        ValueError: bad shapes or values; forced lengths with a criterion
            of the user's own class on LiteRT (no threshold is known never
            to fire).
    """
    x = checks.check_inputs(runtime, x, "x", ndim=3)
    batch, time_steps = x.shape[:2]
    steps = (np.full(batch, time_steps, np.int64) if steps is None
             else np.asarray(steps, np.int64).reshape(batch))
    if lengths is not None:
        lengths = checks.check_lengths(runtime, lengths, (batch, time_steps))
    seeds = (np.zeros(batch, np.int64) if seeds is None
             else np.asarray(seeds, np.int64).reshape(batch))
    frames, out_lengths = runtime.run_sequences(x, steps, lengths, seeds)
    real = np.arange(time_steps)[None, :] < steps[:, None]  # (B, T)
    frames[~real] = 0.0
    return frames, np.where(real, out_lengths, 0).astype(np.int32)


def pad(sequences, input_size):
    """Stacks sequences `(T_n, input_size)` into `(B, T_max, input_size)` zeros-padded."""
    steps = np.fromiter(map(len, sequences), np.int64, len(sequences))
    x = np.zeros((len(sequences), int(steps.max()) if len(steps) else 0, input_size),
                 np.float32)
    for row, sequence in enumerate(sequences):
        x[row, :len(sequence)] = sequence
    return x, steps


def decode_sequences(model, inputs, *, stop=None, max_steps=None,
                     batch_size=DEFAULT_BATCH_SIZE, sampler=None, seed=None):
    """Decodes whole sequences in batches; returns every `Out`.

    Args:
        model: a `sg.StreamGen`, a `sg.Runtime`, or a `.keras` / `.tflite`
            path.
        inputs: a list of `N` arrays `(T_n, input_size)` or one array
            `(N, T, input_size)`.
        stop: stop criteria (`None`: the model's); not with a runtime.
        max_steps: optional lower cap; not with a runtime.
        batch_size: positive int, sequences decoded together.
        sampler: how frames are drawn (`sg.samplers`); `None`: the
            runtime's (`Greedy()` for a model or a path).
        seed: int: sequence `n` gets the seed `randomness.derive_seed(seed,
            n)`, so its output does not depend on `batch_size`; `None`: a
            fresh seed (when the decoding samples at all).

    Returns:
        A list of `N` lists of `T_n` float32 arrays `(L, output_size)`:
        `result[n][t]` is `Out[t]` of sequence `n`, equal to what
        `model.decode` and `Stream` give (lengths exactly, frames to float
        round-off).

    Example:

    >>> outs = sg.decode_sequences(sg.load_default(), [np.zeros((4, 3))])
    >>> len(outs[0]), outs[0][0].shape[1]
    (4, 2)
    """
    runtime = as_runtime(model, stop, max_steps, sampler=sampler)
    seed = randomness.new_seed() if seed is None else randomness.check_seed("seed", seed)
    flat = ragged.flatten_inputs(inputs)
    sequences = ragged.split(flat.rows, flat.steps)
    result = [None] * len(sequences)
    for index in length_batches(flat.steps, batch_size):
        x, steps = pad([sequences[n] for n in index], runtime.input_size)
        seeds = [randomness.derive_seed(seed, int(n)) for n in index]
        frames, lengths = decode_padded(runtime, x, steps, seeds=seeds)
        for row, n in enumerate(index):
            result[n] = [frames[row, t, :lengths[row, t]].copy() for t in range(steps[row])]
    return result


# ---------------------------------------------------------------------- #
# Files.
# ---------------------------------------------------------------------- #
def decode_jsonl(model, paths, out, *, stop=None, max_steps=None,
                 batch_size=DEFAULT_BATCH_SIZE, on_error="fail", progress=None, readers=None,
                 sampler=None, seed=None):
    """Decodes JSONL files of sequences; writes one line of `Out` per sequence.

    Each input line is a record in the training format (`{"x": [[...],
    ...]}`; `"y"` is optional and ignored). For each, in input order, one
    line is written: `{"y": [Out[0], Out[1], ...]}` with `"id"` first when
    the record has one (copied as it is), frames with 6 significant digits
    exactly as `streamgen stream` prints them. Files are read in chunks of
    `batch_size` sequences (never whole) and each chunk is decoded in one
    batch; reading the next chunk overlaps decoding this one.

    Args:
        model: a `sg.StreamGen`, a `sg.Runtime`, or a `.keras` / `.tflite`
            path.
        paths: JSONL files or glob patterns (see `sg.read_records`); a
            `.jsonl.gz`, a FIFO or `"-"` (standard input) is read once.
        out: a text file object (written, not closed), or a path: written
            complete or absent (`streamgen.outputs.AtomicText`: a failure
            or an interrupt leaves the previous file), never one of the
            inputs (a `ValueError`).
        stop: stop criteria (`None`: the model's); not with a runtime.
        max_steps: optional lower cap; not with a runtime.
        batch_size: positive int, sequences per chunk.
        on_error: `"fail"`: a malformed record raises (after every earlier
            line is written); `"skip"`: it is left out; or a callable,
            called with each `jsonl.RecordError` (then skipped; it may
            raise to stop).
        progress: optional callable `progress(sequences, steps)`, called
            after each chunk with the totals so far.
        readers: processes that parse JSON while this one decodes (0:
            parse in a thread here); `None`: 0 for inputs under 8 MB, else
            the CPUs but one (1 to 4).
        sampler: how frames are drawn (`sg.samplers`); `None`: the
            runtime's.
        seed: int: a record's seed is `randomness.derive_seed(seed, key)`
            with `key` its `"id"` (as text when not a string) or, without
            one, its 0-based line in its file (`"name:line"` over several
            files, `name` the file's base name), so the output does not depend on `batch_size`;
            `None`: a fresh seed.

    Returns:
        dict: `"sequences"` and `"steps"` decoded, `"skipped"` records.

    Bad records (`on_error`) include an `"id"` JSON cannot write (NaN,
    infinity, a lone surrogate) and a record whose frames are not finite:
    every line written is strict JSON. Chunks hold at most `batch_size`
    records and `STEP_BUDGET` padded steps (see `chunks`).

    Raises:
        ValueError: with `on_error="fail"`, `"{path}:{line}: {what}"`.
        FileNotFoundError: a missing file or a pattern without matches.

    Example:

    >>> sg.decode_jsonl(sg.load_default(), ["samples/valid*.jsonl"], "out.jsonl")
    {'sequences': 300, 'steps': 3555, 'skipped': 0}
    """
    runtime = as_runtime(model, stop, max_steps, jit_compile=True, sampler=sampler)
    seed = randomness.new_seed() if seed is None else randomness.check_seed("seed", seed)
    batch_size = checks.positive_int("batch_size", batch_size)
    if not (on_error in ("fail", "skip") or callable(on_error)):
        raise checks.invalid("on_error", "'fail', 'skip' or a callable", on_error)
    files = jsonl.expand_paths(paths, stdin=True)
    if isinstance(out, (str, os.PathLike)):
        outputs.check_not_input(os.fspath(out), files)
        with outputs.AtomicText(out) as fh:  # complete or absent
            return decode_jsonl(runtime, files, fh, batch_size=batch_size,
                                on_error=on_error, progress=progress, readers=readers,
                                seed=seed)
    plain = all(jsonl.is_plain(path) for path in files)  # not .gz, a FIFO or stdin
    if readers is None:
        size = sum(os.path.getsize(path) for path in files) if plain else 0
        readers = 0 if size < PARALLEL_BYTES else max(1, min(4, (os.cpu_count() or 2) - 1))
    readers = checks.check_count("readers", readers)
    if "fork" not in _start_methods() or not plain:
        readers = 0
    if readers:  # JSON parsing (the bottleneck) in other processes
        records = _parallel_records(files, runtime.input_size, readers, batch_size)
    else:
        records = jsonl.read_records(files, targets=False, input_size=runtime.input_size,
                                     on_error="yield")
    totals = {"sequences": 0, "steps": 0, "skipped": 0}

    def bad_record(bad):
        if on_error == "fail":
            out.flush()
            raise ValueError(str(bad))
        totals["skipped"] += 1
        if callable(on_error):
            on_error(bad)

    for chunk, bad in _prefetch(chunks(checked_ids(records), batch_size)):
        if chunk:
            lines = format_lines(runtime, chunk, seed, len(files) > 1)
            good = [line for line in lines if isinstance(line, str)]
            if len(good) == len(lines):
                out.write("".join(lines))
            else:  # a record whose frames are not finite: the lines before it first
                for record, line in zip(chunk, lines):
                    if isinstance(line, str):
                        out.write(line)
                    else:
                        out.flush()
                        bad_record(line)
            totals["sequences"] += len(good)
            totals["steps"] += sum(len(r.inputs) for r, line in zip(chunk, lines)
                                   if isinstance(line, str))
            if progress is not None:
                progress(totals["sequences"], totals["steps"])
        if bad is not None:
            bad_record(bad)
    out.flush()
    return totals


def checked_ids(records):
    """`records` with each record whose `"id"` JSON cannot write as a `RecordError`.

    JSON has no infinity or NaN (an id `1e400` reads as infinity) and UTF-8
    no lone surrogate (`"\\ud800"`): such an id is a bad record, never an
    invalid output line.
    """
    for record in records:
        if isinstance(record, jsonl.Record) and "id" in record.data:
            try:
                _id_json(record.data["id"])
            except ValueError as error:
                record = jsonl.RecordError(record.path, record.line_no,
                                           f"field 'id': {error}")
        yield record


def record_seed(seed, record, several_files=False):
    """A record's seed: `derive_seed(seed, id)` (an id that is not a str
    as its JSON text), else `derive_seed(seed, line_no - 1)` (over several
    files `derive_seed(seed, "name:line_no")`, `name` the file's base name)."""
    if "id" in record.data:
        key = record.data["id"]
        return randomness.derive_seed(seed, key if isinstance(key, str) else _id_json(key))
    if several_files:  # the file's name: the same locally and on Ray (absolute paths)
        return randomness.derive_seed(seed, f"{os.path.basename(record.path)}:{record.line_no}")
    return randomness.derive_seed(seed, record.line_no - 1)


def format_lines(runtime, records, seed=0, several_files=False):
    """Decodes `records` (one batch) and returns their output lines, in order.

    Each record gets its own seed (`record_seed`), derived only when the
    runtime's rows read random draws (`runtime.samples()`): a greedy decode
    does not depend on seeds, and deriving one costs a Philox block per
    record (~20 us, as much as decoding a short record).

    Returns:
        A list with, per record, its output line (str), or a
        `jsonl.RecordError` naming the first outer step whose frames are
        not finite (strict JSON has no NaN or infinity; a line of `null`s
        would be fake data).
    """
    try:
        x, steps = pad([r.inputs for r in records], runtime.input_size)
        seeds = ([record_seed(seed, r, several_files) for r in records]
                 if runtime.samples() else None)
        frames, lengths = decode_padded(runtime, x, steps, seeds=seeds)
    except MemoryError:
        if len(records) > 1:  # each on its own
            return [line for record in records
                    for line in format_lines(runtime, [record], seed, several_files)]
        record = records[0]
        need = len(record.inputs) * runtime.trained_max_steps * runtime.output_size * 4
        return [jsonl.RecordError(
            record.path, record.line_no,
            f"{len(record.inputs):,} outer steps, too long to decode in the memory "
            f"available (its frames alone take {need / 2**30:.1f} GiB); split the record")]
    if np.isfinite(frames.sum(dtype=np.float64)):  # no NaN or infinity anywhere (the
        bad = np.zeros(len(records), bool)  # usual case: one pass, no mask)
    else:
        emitted = np.arange(frames.shape[2])[None, None, :] < lengths[..., None]  # (B, T, M)
        broken = ~np.isfinite(frames).all(axis=3) & emitted  # (B, T, M)
        bad_steps = broken.any(axis=2)  # (B, T)
        bad = bad_steps.any(axis=1)  # (B,)
    keep = np.flatnonzero(~bad)
    texts = iter(jsontext.sequences_json(frames[keep], lengths[keep], steps[keep])
                 if len(keep) < len(records) else
                 jsontext.sequences_json(frames, lengths, steps))
    lines = []
    for row, record in enumerate(records):
        if bad[row]:
            t = int(np.argmax(bad_steps[row]))
            lines.append(jsonl.RecordError(
                record.path, record.line_no,
                f"step {t}: the model's frames are not finite (NaN or infinity); "
                "inputs this large are beyond what the model computes in float32"))
            continue
        text = next(texts)
        data = record.data
        if "id" in data:
            lines.append('{"id":' + _id_json(data["id"]) + ',"y":' + text + "}\n")
        else:
            lines.append('{"y":' + text + "}\n")
    return lines


def _id_json(value):
    """An id as strict JSON text; `ValueError` if JSON or UTF-8 cannot write it."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise ValueError("holds a number that is not finite (NaN, or beyond float64 "
                         "such as 1e400), which JSON cannot write") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate (such as \\ud800), which UTF-8 "
                         "cannot write") from None
    return text


PARALLEL_BYTES = 8 << 20  # smaller inputs are parsed in this process


def _parallel_records(files, input_size, readers, lines_per_range):
    """`jsonl.read_records(files, targets=False)`, parsed by `readers` processes.

    The files are cut into ranges of whole lines (`jsonl.line_ranges`), each
    parsed in a worker process; results come back in input order, at most
    `2 * readers` ranges ahead.
    """
    import concurrent.futures
    import multiprocessing

    ranges = ((path, *span) for path in files
              for span in jsonl.line_ranges(path, lines_per_range))
    # "fork": the readers run only `jsonl` (numpy and the json module), never
    # the runtime, and "spawn" would re-run the caller's `__main__`.
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(readers, mp_context=context,
                                                initializer=die_with_parent,
                                                initargs=(os.getpid(),)) as pool:
        pending = []
        for span in ranges:
            pending.append(pool.submit(_parse_range, *span, input_size))
            if len(pending) > 2 * readers:
                yield from pending.pop(0).result()
        for future in pending:
            yield from future.result()


def die_with_parent(parent):
    """In a reader process: end when the process `parent` ends, even by SIGKILL.

    On Linux the kernel sends SIGKILL at the parent's death
    (`prctl(PR_SET_PDEATHSIG)`); if the parent is already gone when this
    runs, the process ends at once. Elsewhere, a thread polls the parent's
    pid once a second.
    """
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            _watch_parent(parent)
    else:
        _watch_parent(parent)
    if os.getppid() != parent:  # died before the prctl
        os._exit(1)


def _watch_parent(parent):
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="streamgen-parent-watch", daemon=True).start()


def _start_methods():
    import multiprocessing

    return multiprocessing.get_all_start_methods()


def _parse_range(path, start, end, first_line, input_size):
    """Runs in a reader process: one range's records, compact (no `"y"`)."""
    out = []
    for item in jsonl.read_range(path, start, end, first_line, targets=False,
                                 input_size=input_size, on_error="yield"):
        if isinstance(item, jsonl.Record):
            data = {"id": item.data["id"]} if "id" in item.data else {}
            item = item._replace(data=data)
        out.append(item)
    return out


STEP_BUDGET = 1 << 18  # padded outer steps decoded together (see `chunks`)


def chunks(records, batch_size, step_budget=STEP_BUDGET):
    """`(chunk, error)` pairs: up to `batch_size` records, then the bad record (or None).

    A chunk ends early at a bad record, so that everything before it is
    decoded and written before the error is acted on, and at the end of a
    file (so a file's batches do not depend on the files before it). It
    also ends before its padded size, rows times its longest record, would
    pass `step_budget` outer steps: the memory of a batch is bounded by the
    work in it, never by the longest record times `batch_size`. A record
    longer than `step_budget` is a chunk of its own.
    """
    chunk, longest = [], 0
    for record in records:
        if isinstance(record, jsonl.RecordError):
            yield chunk, record
            chunk, longest = [], 0
            continue
        steps = len(record.inputs)
        if chunk and (record.path != chunk[-1].path
                      or (len(chunk) + 1) * max(longest, steps) > step_budget):
            yield chunk, None
            chunk, longest = [], 0
        chunk.append(record)
        longest = max(longest, steps)
        if len(chunk) == batch_size:
            yield chunk, None
            chunk, longest = [], 0
    if chunk:
        yield chunk, None


_DONE = object()


def _prefetch(iterator, depth=2):
    """Runs `iterator` in a thread, `depth` items ahead (parsing overlaps decoding)."""
    items = queue.Queue(depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as error:  # handed to the consumer, raised there
            put((_DONE, error))

    thread = threading.Thread(target=produce, name="streamgen-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


def evaluate(model, inputs, targets, stop=None, batch_size=256):
    """Free-running lengths and length-forced frames against the truth.

    Decodes in batches of similar length (`streamgen.offline.decode`: sequences
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
        `"frame_nll"` (a `.keras` model with `"mdn"` or `"categorical"`
        frames only): the teacher-forced negative log-likelihood of the
        true frames per frame (`frame_nll`).

    Raises:
        ValueError: malformed or mismatched inputs / targets (as
            `sg.make_dataset`), or a bad `batch_size`.

    Example:

    >>> inputs, targets = sg.load_jsonl("samples/valid.jsonl")
    >>> figures = sg.evaluate(sg.load_default(), inputs, targets)
    >>> sorted(figures), figures["length_accuracy"] > 0.95
    (['frame_mse', 'length_accuracy', 'length_mae'], True)
    """
    batch_size = checks.positive_int("batch_size", batch_size)
    runtime = as_runtime(model, stop=stop)
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
        raise checks.invalid("inputs", f"vectors of width input_size={runtime.input_size}",
                              f"width {flat_x.rows.shape[1]}")
    cap = runtime.trained_max_steps
    ragged.check_lengths(flat_y, cap)
    sequences = ragged.split(flat_x.rows, steps)
    frames, lengths = ragged.pad_targets(targets, cap, runtime.output_size)

    totals = dict(steps=0, correct=0, abs_error=0.0, squared=0.0, values=0)
    for index in length_batches(steps, batch_size):
        x, _ = pad([sequences[n] for n in index], runtime.input_size)  # (B, T, I)
        T = x.shape[1]
        real = np.arange(T)[None, :] < steps[index][:, None]  # (B, T)
        true_lengths = lengths[index, :T]  # (B, T), 0 on padded steps
        true_frames = frames[index, :T]  # (B, T, M, O)

        _, free_lengths = decode_padded(runtime, x, steps[index])
        difference = np.abs(free_lengths - true_lengths)[real]
        totals["steps"] += difference.size
        totals["correct"] += int(np.count_nonzero(difference == 0))
        totals["abs_error"] += float(difference.sum())

        forced_frames, _ = decode_padded(runtime, x, steps[index], lengths=true_lengths)
        emitted = np.arange(cap)[None, None, :] < true_lengths[..., None]
        error = (forced_frames - true_frames)[emitted]  # (F, O)
        totals["squared"] += float(np.square(error, dtype=np.float64).sum())
        totals["values"] += error.size

    figures = {
        "length_accuracy": totals["correct"] / totals["steps"],
        "length_mae": totals["abs_error"] / totals["steps"],
        "frame_mse": (totals["squared"] / totals["values"]
                      if totals["values"] else float("nan")),
    }
    keras_model = getattr(runtime, "model", None)  # a TensorFlow runtime's model
    if getattr(keras_model, "frame_loss", None) in ("mdn", "categorical"):
        figures["frame_nll"] = frame_nll(keras_model, inputs, targets, batch_size)
    return figures


def frame_nll(model, inputs, targets, batch_size=256):
    """Teacher-forced negative log-likelihood of the true frames, per frame.

    The mixture's NLL for `"mdn"` frames, the categorical cross-entropy for
    `"categorical"` ones (the model's frame loss, unweighted), averaged over
    every true frame.

    Args:
        model: a `sg.StreamGen`.
        inputs, targets: as `sg.make_dataset` takes them.
        batch_size: positive int.

    Returns:
        A Python float; NaN when the targets hold no frame.
    """
    from streamgen import losses  # TensorFlow is loaded: the model is a Keras model
    from streamgen.data import dataset as data_lib
    from streamgen.quiet import import_tensorflow

    tf = import_tensorflow()
    dataset = data_lib.make_dataset(inputs, targets, batch_size, shuffle=False,
                                    max_steps=model.max_steps, output_size=model.output_size)
    total, count = 0.0, 0.0
    for x, y in dataset:
        predicted = model(x)
        predicted = predicted["mixture"] if model.frame_loss == "mdn" else predicted["frames"]
        per_frame = losses.frame_losses(y["frames"], predicted, model.frame_loss)  # (B, T, M)
        total += float(tf.reduce_sum(per_frame * y["frame_mask"]))
        count += float(tf.reduce_sum(y["frame_mask"]))
    return total / count if count else float("nan")
