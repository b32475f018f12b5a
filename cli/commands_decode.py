"""`streamgen decode`: JSONL files of sequences in, one line of `Out` per sequence out.

A thin layer over `sg.decode_jsonl` (one machine) and
`streamgen.offline.ray.decode_ray` (a Ray cluster). The progress bar goes to
stderr, and only when stderr is a terminal.
"""

import os
import re
import sys
import time

import click

from streamgen.cli import common

# `--ray ADDRESS`: "auto", "local", "ray://host:port" or "host:port".
_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.-]+:\d+)$")


@click.command()
@click.argument("data", nargs=-1, metavar="DATA...")
@click.option("--output", "-o", required=True, metavar="OUT",
              help="Output JSONL file ('-' for stdout); with --ray, a folder for the shards.")
@common.model_option
@common.stop_options
@common.cap_option
@common.sampling_options
@click.option("--batch-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Sequences decoded together in one batch.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True,
              help="On a bad record: stop with status 1 and leave OUT as it was (fail; "
                   "with -o -, every earlier line is written), or report it, leave it out "
                   "and go on (skip).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              metavar="[ADDRESS]",
              help="Decode on a Ray cluster with Ray Data: a local one, or the cluster at "
                   "ADDRESS (auto, host:port, ray://host:port). OUT is then a folder of "
                   "JSONL shards.")
@click.option("--overwrite", is_flag=True,
              help="With --ray: replace a non-empty OUT folder (kept until the run "
                   "succeeds).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --ray: actors that each load the model once (default: the "
                   "cluster's CPUs).")
def decode(data, output, model_path, stop_kind, threshold, max_steps, sampler, seed,
           batch_size, on_error, ray_address, overwrite, workers):
    """Decode whole sequences from JSONL files, many at a time.

    DATA are JSONL files or glob patterns in the training format, one
    sequence per line: {"x": [[...], ...]} ("y" optional and ignored). For
    each sequence one line is written, in input order:
    {"y": [Out[0], Out[1], ...]}, each Out[i] as 'streamgen stream' prints
    it, with "id" first when the record has one. A bad record is reported
    as 'streamgen: error: FILE:LINE: ...'; --on-error decides what follows.
    A .tflite model (from 'streamgen export') runs without TensorFlow.

    The sampling options and --stop sample work as in 'streamgen stream'.
    With --seed N, record n draws from a seed made of N and its "id" (or,
    without one, its line number): the output is the same whatever
    --batch-size, and with --ray whatever the shards.

    \b
    Example:
      streamgen decode samples/valid.jsonl -o out.jsonl
      streamgen decode samples/valid.jsonl --model mdn.keras --top-k 3 --seed 7 -o out.jsonl
      streamgen decode 'data/*.jsonl' --model m.tflite --batch-size 8192 -o -
      streamgen decode --ray data/*.jsonl -o out_dir --workers 2 --overwrite
    """
    if ray_address is not None and not _ADDRESS.match(ray_address):
        data = (ray_address,) + data  # `--ray DATA ...`: the flag without an address
        ray_address = "local"
    if not data:
        raise click.UsageError("Missing argument 'DATA...'.")
    if workers is not None and ray_address is None:
        raise click.UsageError("--workers needs --ray.")
    files = _files(data)
    _check_output(output, files, ray_address is not None, overwrite)
    if ray_address is not None:  # the actors open the model; here only its facts are read
        path, stop = common.resolve_options(model_path, stop_kind, threshold, max_steps, sampler)
        return _decode_ray(ray_address, workers, files, output, path, stop, max_steps,
                           batch_size, on_error, overwrite, sampler, seed)
    # Locally, a TensorFlow step compiled with XLA (the fastest); opened once.
    runtime = common.open_runtime(model_path, stop_kind, threshold, max_steps,
                                  jit_compile=True, sampler=sampler)
    import streamgen as sg

    bar = Progress(files) if _is_terminal(sys.stderr) else None
    written = {"sequences": 0}

    def progress(sequences, steps):
        written["sequences"] = sequences
        if bar is not None:
            bar(sequences, steps)

    out = sys.stdout if output == "-" else _open_output(output)
    try:
        totals = sg.decode_jsonl(runtime, files, out, batch_size=batch_size,
                                 on_error="fail" if on_error == "fail" else _report,
                                 progress=progress, sampler=sampler, seed=seed)
        if out is not sys.stdout:
            out.commit()
    except KeyboardInterrupt:
        _abandon(out, bar)
        count = written["sequences"]
        records = f"{count:,} record{'' if count == 1 else 's'}"
        if out is sys.stdout:
            common.report(f"interrupted: {records} written to standard output")
        else:
            common.report(f"interrupted after {records}; {output} was not written "
                          "(an existing file is left as it was)")
        raise
    except BrokenPipeError:  # `-o - | head`: quiet, as `stream`
        _abandon(out, bar)
        raise
    except (ValueError, OSError) as error:
        _abandon(out, bar)
        message = str(error)
        if out is not sys.stdout:
            message += f"; {output} was not written"
        raise common.CliError(message) from None
    _end(bar)
    if totals["skipped"]:
        common.report(f"skipped {totals['skipped']} bad record"
                      f"{'' if totals['skipped'] == 1 else 's'}")


def _abandon(out, bar):
    """After a failure: no partial output file, the progress line ended."""
    if out is not sys.stdout:
        out.discard()
    _end(bar)


def _check_output(output, files, ray, overwrite):
    """Usage errors about OUT, before any work: never an input, never half a folder."""
    from streamgen import outputs

    if overwrite and not ray:
        raise click.UsageError("--overwrite needs --ray (a local -o FILE is always "
                               "replaced whole).")
    if output == "-":
        return
    try:
        outputs.check_not_input(output, files, folder=ray)
        if ray:
            outputs.check_folder(output, overwrite)
    except ValueError as error:
        raise common.bad_value("output", str(error)) from None


def _files(data):
    from streamgen.data import jsonl

    try:
        return jsonl.expand_paths(list(data), stdin=True)
    except (FileNotFoundError, ValueError) as error:
        raise common.bad_value("data", str(error)) from None


def _open_output(path):
    """A `streamgen.outputs.AtomicText` at `path` (complete or absent)."""
    from streamgen import outputs

    folder = os.path.dirname(path) or "."
    if os.path.isdir(path) or not os.path.isdir(folder):
        raise common.bad_value("output", f"cannot write a file at {path!r}.")
    try:
        return outputs.AtomicText(path)
    except OSError as error:
        raise common.bad_value("output", f"{error}.") from None


def _report(error):
    common.report(f"error: {error}")


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _end(progress):
    if progress is not None:
        progress.close()


class Progress:
    """A one-line progress bar on stderr: sequences, steps/s and time left."""

    def __init__(self, files, stream=None):
        self.stream = stream or sys.stderr
        from streamgen.data import jsonl

        # An upper bound; a FIFO or stdin cannot be read twice: no total then.
        countable = all(path != "-" and (jsonl.is_plain(path) or path.endswith(".gz"))
                        for path in files)
        self.total = sum(_count_lines(path) for path in files) if countable else 0
        self.start = time.perf_counter()
        self.shown = 0.0

    def __call__(self, sequences, steps):
        now = time.perf_counter()
        if now - self.shown < 0.2 and sequences < self.total:
            return
        self.shown = now
        elapsed = max(now - self.start, 1e-9)
        share = min(sequences / self.total, 1.0) if self.total else 1.0
        left = elapsed * (1 - share) / share if share else 0.0
        bar = "#" * int(share * 30)
        self.stream.write(f"\r[{bar:<30}] {sequences:,}/{self.total:,} sequences  "
                          f"{steps / elapsed:,.0f} steps/s  {left:.0f} s left ")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()


def _count_lines(path):
    from streamgen.data import jsonl

    count = 0
    with jsonl.open_binary(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


def _decode_ray(address, workers, files, output, path, stop, max_steps, batch_size, on_error,
                overwrite, sampler, seed):
    """`--ray`: Ray Data over an actor pool; shards in the folder `output`."""
    if output == "-" or (os.path.exists(output) and not os.path.isdir(output)):
        raise common.bad_value("output", f"with --ray, OUT is a folder; got {output!r}.")
    try:
        from streamgen.offline import ray as raydata
    except ImportError as error:
        raise common.CliError(f"--ray needs Ray Data (pip install -e '.[serve]'): {error}") \
            from None
    try:
        result = raydata.decode_ray(
            path, files, output, address=None if address == "local" else address,
            workers=workers, stop=stop, max_steps=max_steps,
            batch_size=batch_size, on_error=on_error, report=_report, overwrite=overwrite,
            sampler=sampler, seed=seed)
    except KeyboardInterrupt:
        common.report(f"interrupted; {output} was not written (an existing folder is left "
                      "as it was)")
        raise
    except (ValueError, OSError) as error:
        raise common.CliError(f"{error}; {output} was not written") from None
    if result["skipped"]:
        common.report(f"skipped {result['skipped']} bad record"
                      f"{'' if result['skipped'] == 1 else 's'}")
