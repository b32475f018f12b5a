"""Offline decoding on a Ray cluster with Ray Data (`streamgen decode --ray`).

The driver cuts the input files into *shards* of whole lines (byte ranges,
found by counting newlines; nothing is parsed there) and hands them to
`ray.data`: `map_batches` over a pool of actors, each of which loads the
model once and runs, per shard, exactly what the local path runs per chunk
(`streamgen.data.jsonl.read_range` -> `streamgen.offline.decode.format_lines`). Each
actor writes its shard's output lines to `part-NNNNN.jsonl` in a temporary
folder beside `OUT_DIR`, renamed to `OUT_DIR` once every shard is written
(`streamgen.outputs.AtomicFolder`: complete or absent). Shards are numbered in input
order, so the shards concatenated by name are the local run's output.

Input files and `OUT_DIR` must be reachable under the same path from every
node (one machine, or a shared filesystem). Needs `ray[data]` (the
`serve` extra); nothing else in streamgen imports this module.
"""

import json
import logging
import os
import warnings

from streamgen import checks
from streamgen import outputs
from streamgen import randomness
from streamgen import samplers
from streamgen.data import jsonl

__all__ = ["decode_ray", "plan_shards"]


def plan_shards(files, lines_per_shard):
    """Cuts files into shards of whole lines, in input order.

    Args:
        files: list of file names.
        lines_per_shard: positive int.

    Returns:
        A list of dicts `{"index", "path", "start", "end", "first_line"}`.
    """
    shards = []
    for path in files:
        if not jsonl.is_plain(path):  # a .gz: one shard (no byte offsets to seek to)
            shards.append({"index": len(shards), "path": os.path.abspath(path),
                           "start": 0, "end": -1, "first_line": 1})
            continue
        for start, end, first_line in jsonl.line_ranges(path, lines_per_shard):
            shards.append({"index": len(shards), "path": os.path.abspath(path),
                           "start": start, "end": end, "first_line": first_line})
    return shards


def shard_name(index):
    return f"part-{index:05d}.jsonl"


class ShardDecoder:
    """A Ray Data actor: loads the model once, decodes and writes whole shards.

    Args:
        model_path: a `.keras` or `.tflite` file.
        stop: criteria dicts or None; max_steps: int or None.
        batch_size: sequences per decoded batch.
        out_dir: the folder of the shards.
        on_error: `"fail"` (a shard stops at its first bad record) or
            `"skip"`.
        threads: CPU threads for the model.
    """

    settings = {}  # the constructor's arguments, for `bound`

    @classmethod
    def bound(cls, **settings):
        """A subclass whose constructor takes no arguments (they are baked in).

        Ray then has no constructor arguments to keep in its object store.
        """
        return type(cls.__name__, (cls,), {"settings": settings})

    def __init__(self, model_path=None, stop=None, max_steps=None, batch_size=4096,
                 out_dir=".", on_error="fail", threads=1, sampler=None, seed=0,
                 several_files=False):
        from streamgen.offline import decode as offline

        if self.settings:  # a `bound` subclass
            self._setup(offline, **self.settings)
        else:
            self._setup(offline, model_path, stop, max_steps, batch_size, out_dir, on_error,
                        threads, sampler, seed, several_files)

    def _setup(self, offline, model_path, stop, max_steps, batch_size, out_dir, on_error,
               threads=1, sampler=None, seed=0, several_files=False):
        if not model_path.lower().endswith(".tflite"):
            from streamgen.quiet import import_tensorflow

            tf = import_tensorflow()
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.runtime = offline.as_runtime(model_path, stop, max_steps, jit_compile=True,
                                          sampler=sampler)
        self.seed, self.several_files = seed, several_files  # `offline.record_seed`
        self.batch_size = batch_size
        self.out_dir = out_dir
        self.on_error = on_error

    def __call__(self, batch):
        results = {k: [] for k in ("index", "sequences", "steps", "errors", "failed")}
        for row in range(len(batch["index"])):
            shard = {key: batch[key][row].item() if hasattr(batch[key][row], "item")
                     else batch[key][row] for key in batch}
            result = self.decode_shard(shard)
            for key in results:
                results[key].append(result[key])
        return results

    def decode_shard(self, shard):
        from streamgen.offline import decode as offline

        end = shard["end"] if shard["end"] >= 0 else None  # -1: to the end (.gz)
        records = offline.checked_ids(jsonl.read_range(
            shard["path"], shard["start"], end, shard["first_line"], targets=False,
            input_size=self.runtime.input_size, on_error="yield"))
        name = os.path.join(self.out_dir, shard_name(shard["index"]))
        temporary = f"{name}.tmp-{os.getpid()}"
        counts = {"sequences": 0, "steps": 0}
        errors, failed = [], ""
        with open(temporary, "w", encoding="utf-8") as out:
            for chunk, bad in offline.chunks(records, self.batch_size):
                lines = (offline.format_lines(self.runtime, chunk, self.seed, self.several_files)
                         if chunk else [])
                for record, line in zip(chunk, lines):
                    if isinstance(line, str):
                        out.write(line)
                        counts["sequences"] += 1
                        counts["steps"] += len(record.inputs)
                        continue
                    errors.append(str(line))  # frames that are not finite
                    if self.on_error == "fail":
                        failed = str(line)
                        break
                if failed:
                    break
                if bad is not None:
                    errors.append(str(bad))
                    if self.on_error == "fail":
                        failed = str(bad)
                        break
        os.replace(temporary, name)
        return {"index": shard["index"], **counts, "errors": json.dumps(errors),
                "failed": failed}


def decode_ray(model_path, paths, out_dir, *, address=None, workers=None, stop=None,
               max_steps=None, batch_size=4096, lines_per_shard=None, on_error="fail",
               report=None, overwrite=False, sampler=None, seed=None):
    """Decodes JSONL files on a Ray cluster; writes JSONL shards to `out_dir`.

    Args:
        model_path: a `.keras` or `.tflite` file (each actor loads it once).
        paths: JSONL files or glob patterns.
        out_dir: folder for `part-NNNNN.jsonl`, complete or absent: the
            shards go to a temporary folder beside it, renamed to `out_dir`
            when every shard is written; a failure or an interrupt leaves
            `out_dir` as it was and no temporary folder.
        overwrite: replace a non-empty `out_dir` (at the end, on success);
            without it a non-empty `out_dir` is a `ValueError`.
        address: a Ray cluster's address (`"auto"`, `"host:port"`,
            `"ray://host:port"`); `None` starts a new local cluster (on
            127.0.0.1, never one found on the machine) unless Ray is already
            initialized in this process (then that one is used).
        workers: actors in the pool; `None`: the cluster's CPUs.
        stop, max_steps: as `sg.decode_jsonl`.
        batch_size: sequences per decoded batch inside a shard.
        lines_per_shard: lines per shard; default `2 * batch_size`.
        on_error: `"fail"`: every shard stops at its first bad record, the
            first bad record in input order is raised and nothing is
            written (as `sg.decode_jsonl` to a file); `"skip"`: bad records
            are left out.
        report: optional callable, called with each bad record's message
            (`"path:line: what"`) in input order (skip mode).
        sampler, seed: as `sg.decode_jsonl`: each record's seed comes from
            `seed` and its id or line (`offline.record_seed`), so the lines
            equal `sg.decode_jsonl`'s whatever the shards.

    Returns:
        dict: `"sequences"`, `"steps"`, `"skipped"`, `"shards"` (file names
        in order).

    Raises:
        ValueError: with `on_error="fail"`, the first bad record (then
            nothing is written); a non-empty `out_dir` without
            `overwrite`, or one that holds an input.
        ImportError: Ray Data is not installed.
    """
    import ray

    batch_size = checks.positive_int("batch_size", batch_size)
    lines_per_shard = checks.positive_int(
        "lines_per_shard", lines_per_shard if lines_per_shard is not None else 2 * batch_size)
    if on_error not in ("fail", "skip"):
        raise checks.invalid("on_error", "'fail' or 'skip'", on_error)
    files = jsonl.expand_paths(paths)
    sampling = {"sampler": None if sampler is None else samplers.serialize(sampler),
                "seed": randomness.new_seed() if seed is None
                else randomness.check_seed("seed", seed),
                "several_files": len(files) > 1}
    out_dir = os.path.abspath(out_dir)
    outputs.check_not_input(out_dir, files, folder=True)
    shards = plan_shards(files, lines_per_shard)
    folder = outputs.AtomicFolder(out_dir, overwrite)
    try:
        totals = _decode(ray, shards, folder.temporary, model_path, address, workers, stop,
                         max_steps, batch_size, on_error, sampling)
        for message in totals.pop("errors"):
            if report is not None:
                report(message)
    except BaseException:
        folder.discard()
        raise
    folder.commit()
    totals["shards"] = [os.path.join(out_dir, shard_name(s["index"])) for s in shards]
    return totals


def _decode(ray, shards, out_dir, model_path, address, workers, stop, max_steps, batch_size,
            on_error, sampling):
    """Runs the shards on the cluster into `out_dir`; returns the totals."""

    started = not ray.is_initialized()
    if started:
        local = address is None
        ray.init(address="local" if local else address, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR, configure_logging=True,
                 **({"_node_ip_address": "127.0.0.1"} if local else {}))
    try:
        _quiet_ray_data()
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = min(checks.positive_int("workers", workers), len(shards))
        dataset = ray.data.from_items(shards, override_num_blocks=len(shards))
        decoder = ShardDecoder.bound(model_path=os.path.abspath(model_path), stop=stop,
                                     max_steps=max_steps, batch_size=batch_size,
                                     out_dir=out_dir, on_error=on_error, **sampling)
        with warnings.catch_warnings():
            # Ray's warnings are for Ray's users, not ours. `max_restarts` is
            # passed the way Ray 2.60 deprecates but has no other way for
            # yet: a failed actor is not restarted, the run fails with its
            # error (and Ray has no restart to warn about).
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = dataset.map_batches(
                decoder, batch_size=1, concurrency=workers, num_cpus=1,
                batch_format="numpy", max_restarts=0)
            results = sorted(decoded.take_all(), key=lambda r: r["index"])
    finally:
        if started:
            ray.shutdown()
    totals = {"sequences": 0, "steps": 0, "skipped": 0, "errors": []}
    for result in results:
        totals["sequences"] += int(result["sequences"])
        totals["steps"] += int(result["steps"])
        if result["failed"]:
            raise ValueError(str(result["failed"]))
        for message in json.loads(str(result["errors"])):
            totals["skipped"] += 1
            totals["errors"].append(message)
    return totals


def _quiet_ray_data():
    """No progress bars or execution logs on the user's terminal."""
    import ray

    context = ray.data.DataContext.get_current()
    with warnings.catch_warnings():  # Ray's own deprecations, not the user's
        warnings.simplefilter("ignore", DeprecationWarning)
        context.enable_progress_bars = False
        for option in ("print_on_execution_start", "enable_operator_progress_bars"):
            if hasattr(context, option):
                setattr(context, option, False)
    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(logging.ERROR)
