"""`LiteRuntime` and `LiteStream`: a `.tflite` export run without TensorFlow.

`sg.LiteStream(path)` runs the file that `StreamGen.export_litert` writes
with the LiteRT interpreter (`ai-edge-litert`) and numpy alone: importing
this module, or using it, never imports TensorFlow. It has the API of
`sg.Stream` (`step`, `feed`, `reset`, `get_state`, `set_state`,
`batch_size`, `stop=` and `max_steps=` overrides) and gives the same lengths
and, to float32 round-off, the same frames as the TensorFlow path (a length
can differ only where a criterion's value lies within float32 round-off of
its threshold; see the README).

`LiteRuntime` is the stateless step under it (`streamgen.runtimes.base`): one
interpreter invocation per call for any set of rows, with one interpreter
per batch-size bucket (powers of two; a call's rows are padded up to their
bucket), so a server's changing batch sizes never re-plan memory. A call
where no row samples (every row greedy, no `StopSample`: the default) runs
the file's greedy step, which computes the same outputs without the draws
and the sampled STOP's test (~5% fewer microseconds at batch 1); the others
run the full step.

A file is checked before the interpreter sees it: the SHA-256 digest stored
in its metadata must match its bytes (any corruption fails here), and every
metadata field is validated (types, ranges, tensor names and shapes).
"""

import copy
import hashlib
import json
import re
import threading

import numpy as np

from streamgen import checks
from streamgen import quiet
from streamgen import criteria as criteria_lib
from streamgen import samplers
from streamgen.errors import NotAnExportError
from streamgen.runtimes.base import Runtime, in_chunks, state_uniforms

METADATA_NAME = "streamgen"  # entry of the .tflite metadata table
# Entry of the metadata table holding the greedy step, a `.tflite` model of
# its own (see `streamgen.runtimes.export`).
GREEDY_NAME = "streamgen_greedy"
SIGNATURE = "serving_default"  # the converter's name for the one signature
FORMAT = "streamgen-litert"
# 5: the greedy step (no `params`, `uniforms` or `StopSample` test) as a
# second model in the metadata entry `GREEDY_NAME`, run when no row of a call
# samples; 4: sampling: `params` `(B, 4)` and `uniforms` inputs, the seed and
# position in the state's last 4 columns, `StopSample` a built-in kind
# (`thresholds` `(B, 4 + custom)`, `streamgen.criteria`); 3 had three
# built-in kinds and no randomness; 2 one column per exported criterion.
FORMAT_VERSION = 5
INPUT_NAMES = ("x", "state", "generate", "thresholds", "caps", "params", "uniforms")
SAMPLING_INPUTS = ("params", "uniforms")  # not inputs of the greedy step
OUTPUT_NAMES = ("frames", "lengths", "state")
# Placeholder of the digest while it is computed (see `digest_of`).
DIGEST_PLACEHOLDER = "0" * 64
_DIGEST = re.compile(rb'"digest": "([0-9a-f]{64})"')
MAX_BUCKET = 1024  # larger calls run in chunks of this many rows
_MAX_WIDTH = 1 << 20  # bound on any size in the metadata


class LiteRuntime(Runtime):
    """A `.tflite` export's outer step as a `sg.Runtime`, without TensorFlow.

    Stateless: `step(x, state)` for any rows (see
    `streamgen.runtimes.base.Runtime.step`). One interpreter per batch-size bucket
    (1, 2, 4, ... 1024 rows) and step (greedy, sampling), made on first use
    (~1.3 MB each); a call is padded up to its bucket, and calls above 1024
    rows run in chunks. Safe to call from several threads (calls are
    serialized).

    Args:
        path: str or path-like, a `.tflite` file written by
            `StreamGen.export_litert` (or `streamgen export`).
        stop: the default stop criteria of its rows, overriding those
            stored in the file: any built-in criteria (`sg.StopCriterion`
            objects or their dicts, `{"class_name": "StopHead", "config":
            {"threshold": 0.7}}`, which need no TensorFlow), a list of
            them, or `[]`. Criteria of the user's own classes must be those
            exported, in order. `None` uses the exported criteria.
        max_steps: optional int in `[1, max_steps of the export]`, a lower
            cap.
        num_threads: threads of each interpreter. Defaults to 1, the
            fastest at batch 1; more can help for large batches.
        sampler: the default sampler of its rows (`sg.samplers`); `None`
            is `Greedy()`. The uniforms are drawn in numpy from each row's
            seed and position, as `TFRuntime` draws them.

    Attributes:
        metadata: everything the export stored (a dict), checked.

    Raises:
        ImportError: if `ai-edge-litert` is not installed.
        NotAnExportError: if the file is not an intact streamgen LiteRT
            export of this format version.
        TypeError, ValueError: for `stop` or `max_steps`.
    """

    kind_hint = ("To use other criteria of your own classes, re-export the model "
                 "with model.export_litert(path, stop=[...]).")

    def __init__(self, path, stop=None, max_steps=None, num_threads=1, sampler=None):
        import_schema()  # the clear ImportError first
        self.path = str(path)
        with open(path, "rb") as file:
            content = file.read()
        self.metadata = read_checked_metadata(content, self.path)
        meta = self.metadata
        self.input_size = meta["input_size"]
        self.output_size = meta["output_size"]
        self.trained_max_steps = meta["max_steps"]
        self.decoder_state = meta["decoder_state"]
        self.frame_loss = meta["frame_loss"]
        self.state_sizes = {"outer": list(meta["outer_state_sizes"]),
                            "inner": list(meta["inner_state_sizes"])}
        self.fingerprint = meta["fingerprint"]
        self.num_threads = checks.positive_int("num_threads", num_threads)
        self._content = content
        self._greedy_content = metadata_entry(content, GREEDY_NAME)
        if self._greedy_content is None:
            raise NotAnExportError(f"{self.path}: invalid streamgen LiteRT export: "
                                   f"no greedy step ({GREEDY_NAME!r})")
        self._set_options(stop, max_steps, sampler)
        for samples in (False, True):  # checks both steps' tensors now, not at a first step
            self._bucket(1, samples)

    def _set_options(self, stop, max_steps, sampler=None):
        """The default criteria, cap and sampler; new interpreters (they
        hold the defaults)."""
        meta = self.metadata
        self.sampler = samplers.check_applies(sampler, self.frame_loss)
        self.params = np.asarray(self.sampler.params(), np.float32)
        self.custom_criteria = criteria_lib.custom_of(meta["criteria"])  # fixed in the file
        self.criteria = meta["criteria"] if stop is None else criteria_lib.as_dicts(stop)
        self.thresholds = criteria_lib.thresholds_row(self.criteria, self.custom_criteria,
                                                  self.kind_hint)
        self.max_steps = checks.resolve_cap(self.trained_max_steps, max_steps)
        self._samples = self.samples()  # whether the defaults read draws
        self._buckets = {}  # rows -> _Bucket of the full step
        self._greedy_buckets = {}  # rows -> _Bucket of the greedy step
        self._lock = threading.Lock()

    def describe(self):
        """See `Runtime.describe`: with the export's `format` and `cell`."""
        return {**super().describe(), "format": "litert", "cell": self.metadata.get("cell")}

    def with_options(self, stop=None, max_steps=None, sampler=None):
        """See `Runtime.with_options`: the file is not read or checked again."""
        other = copy.copy(self)
        other._set_options(self.criteria if stop is None else stop,
                           self.max_steps if max_steps is None else max_steps,
                           self.sampler if sampler is None else sampler)
        return other

    def run(self, x, state, generate=None, thresholds=None, caps=None, params=None,
            samples=None):
        rows = x.shape[0]
        if rows > MAX_BUCKET:
            return in_chunks(self.run, MAX_BUCKET, x, state, generate, thresholds, caps, params,
                             samples=samples)
        if samples is None:
            samples = (self._samples if thresholds is None and params is None
                       else self.samples(thresholds, params))
        if not samples:  # the greedy step: no draws, and the rows' params are all greedy
            params = uniforms = None
        else:
            uniforms = self._uniforms(state)
        with self._lock:
            return self._bucket(rows, samples).run(x, state, generate, thresholds, caps, params,
                                                   uniforms)

    def _uniforms(self, state):
        """The rows' draws at their seeds and positions (as `TFRuntime`)."""
        return state_uniforms(state, self.trained_max_steps, self.draws_per_step)

    def advance(self, x, state, generate=None):
        # `LiteStream`'s hot path (~25 us a step at batch 1): straight to the
        # bucket, without the chunking test of `run`.
        rows = x.shape[0]
        if rows > MAX_BUCKET:
            return self.run(x, state, generate)
        samples = self._samples
        bucket = ((self._buckets if samples else self._greedy_buckets).get(rows)
                  or self._bucket(rows, samples))
        uniforms = self._uniforms(state) if samples else None
        with self._lock:
            return bucket.run(x, state, generate, None, None, None, uniforms)

    def _bucket(self, rows, samples=False):
        """The bucket of `rows` rows, of the full step if `samples`, else of
        the greedy step (the default)."""
        size = 1 << (rows - 1).bit_length()  # the next power of two
        buckets = self._buckets if samples else self._greedy_buckets
        bucket = buckets.get(size)
        if bucket is None:
            bucket = buckets[size] = _Bucket(self, size, samples)
        return bucket


class _Bucket:
    """One interpreter planned for `size` rows, and the inputs it holds.

    `sampling`: of the file's full step; else of its greedy step, which has
    no `params` or `uniforms` input (calls where no row samples). Inputs
    keep their values between invocations, so the defaults (thresholds,
    caps, `generate` all True) are set only when they change.
    """

    def __init__(self, runtime, size, sampling=True):
        from ai_edge_litert.interpreter import Interpreter

        self.runtime, self.size, self.sampling = runtime, size, sampling
        meta = runtime.metadata
        names = {key: name for key, name in meta["inputs"].items()
                 if sampling or key not in SAMPLING_INPUTS}
        try:
            # LiteRT logs "Created TensorFlow Lite XNNPACK delegate for CPU."
            # on stderr when it first plans an interpreter.
            with quiet.silenced_fd2():
                interpreter = Interpreter(
                    model_content=runtime._content if sampling else runtime._greedy_content,
                    num_threads=runtime.num_threads)
                runner = interpreter.get_signature_runner(meta["signature"])
                inputs = runner.get_input_details()
                outputs = runner.get_output_details()
                _check_tensors(runtime, inputs, outputs, meta, sampling)
                self.inputs = {key: inputs[name]["index"] for key, name in names.items()}
                self.outputs = {key: outputs[name]["index"]
                                for key, name in meta["outputs"].items()}
                del runner  # it holds the interpreter's buffers: no resizing while it lives
                for key, name in names.items():
                    shape = list(inputs[name]["shape_signature"])
                    if shape and shape[0] == -1:
                        interpreter.resize_tensor_input(self.inputs[key], [size] + shape[1:])
                interpreter.allocate_tensors()
        except NotAnExportError:
            raise
        except Exception as error:  # noqa: BLE001  (the interpreter's many kinds)
            raise NotAnExportError(
                f"{runtime.path}: the LiteRT interpreter cannot load this file: "
                f"{checks.describe(str(error))}") from None
        self.interpreter = interpreter
        self._x, self._state_in = self.inputs["x"], self.inputs["state"]
        self._frames, self._lengths = self.outputs["frames"], self.outputs["lengths"]
        self._state_out = self.outputs["state"]
        self.defaults = False  # whether generate, thresholds, caps and params hold the defaults
        # whether `uniforms` holds draws (not the constant 0.5); the greedy
        # step has no `uniforms`
        self.drawn = sampling
        self.run(np.zeros((size, runtime.input_size), np.float32),
                 np.zeros((size, runtime.state_size), np.float32), None, None, None, None, None)

    def run(self, x, state, generate, thresholds, caps, params, uniforms):
        """`params` and `uniforms` are `None` in a greedy bucket (it has no
        such inputs)."""
        rows, size = x.shape[0], self.size
        if rows < size:  # pad up to the bucket; padded rows generate nothing
            x, state = _padded(x, size), _padded(state, size)
            generate = np.arange(size) < rows if generate is None else _padded(generate, size)
            thresholds = None if thresholds is None else _padded(thresholds, size)
            caps = None if caps is None else _padded(caps, size)
            params = None if params is None else _padded_params(params, size)
            uniforms = None if uniforms is None else _padded(uniforms, size, 0.5)
        interpreter = self.interpreter
        interpreter.set_tensor(self._x, x)  # copies, from any memory layout
        interpreter.set_tensor(self._state_in, state)
        if not (self.defaults and generate is None and thresholds is None and caps is None
                and params is None):
            self._set_options(generate, thresholds, caps, params)
        if uniforms is not None:
            interpreter.set_tensor(self.inputs["uniforms"], uniforms)
            self.drawn = True
        elif self.drawn:  # no row reads them: any value in (0, 1)
            interpreter.set_tensor(self.inputs["uniforms"], np.full(
                (size, self.runtime.trained_max_steps * self.runtime.draws_per_step),
                0.5, np.float32))
            self.drawn = False
        try:
            interpreter.invoke()
        except Exception as error:  # noqa: BLE001
            raise RuntimeError(
                f"{self.runtime.path}: the LiteRT interpreter failed: "
                f"{checks.describe(str(error))}") from None
        get_tensor = interpreter.get_tensor  # copies
        frames = get_tensor(self._frames)
        lengths = get_tensor(self._lengths)
        state = get_tensor(self._state_out)
        if rows < size:
            frames, lengths, state = frames[:rows], lengths[:rows], state[:rows]
        return frames, lengths, state

    def _set_options(self, generate, thresholds, caps, params):
        """Sets the per-row inputs; `None` means the runtime's defaults.

        Inputs keep their values between invocations: `self.defaults` says
        whether all four hold the defaults, so the common call sets none.
        """
        runtime, size, set_tensor = self.runtime, self.size, self.interpreter.set_tensor
        set_tensor(self.inputs["generate"], np.ones(size, bool) if generate is None else generate)
        set_tensor(self.inputs["thresholds"], np.broadcast_to(
            runtime.thresholds, (size, len(runtime.thresholds))) if thresholds is None
            else thresholds)
        set_tensor(self.inputs["caps"], np.full(size, runtime.max_steps, np.int32)
                   if caps is None else caps)
        if self.sampling:
            set_tensor(self.inputs["params"], np.broadcast_to(
                runtime.params, (size, samplers.PARAMS)) if params is None else params)
        self.defaults = (generate is None and thresholds is None and caps is None
                         and params is None)


def _padded(array, size, fill=0):
    padded = np.full((size,) + array.shape[1:], fill, array.dtype)
    padded[:len(array)] = array
    return padded


def _padded_params(params, size):
    """Sampler rows padded with greedy ones (valid: padded rows generate nothing)."""
    padded = np.tile(np.asarray([samplers.Greedy().params()], np.float32), (size, 1))
    padded[:len(params)] = params
    return padded


def import_schema():
    """`ai_edge_litert.schema_py_generated`, or a clear ImportError."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as error:
        raise ImportError(
            "LiteRT export and `sg.LiteStream` need the `ai-edge-litert` "
            "package: pip install ai-edge-litert (or, in a streamgen checkout, "
            "pip install -e '.[litert]')."
        ) from error
    return schema_py_generated


def read_metadata(content):
    """The streamgen metadata in a `.tflite` file's bytes, or `None`.

    No check at all: see `read_checked_metadata`.
    """
    data = metadata_entry(content, METADATA_NAME)
    return None if data is None else json.loads(data.decode("utf-8"))


def metadata_entry(content, name):
    """The bytes of the metadata entry `name` of a `.tflite` file, or `None`."""
    schema = import_schema()
    root = schema.Model.GetRootAs(content, 0)
    for index in range(root.MetadataLength()):
        entry = root.Metadata(index)
        if entry.Name() == name.encode("ascii"):
            return bytes(root.Buffers(entry.Buffer()).DataAsNumpy())
    return None


def digest_of(content):
    """SHA-256 of a file's bytes with its stored digest set to the placeholder.

    The export writes the file with `DIGEST_PLACEHOLDER`, hashes it, and
    puts the digest in the placeholder's place (same length, so nothing
    else moves); here the same bytes are hashed back.

    Returns:
        `(stored, computed)` hex strings; `stored` is `None` if the file
        holds no digest.
    """
    found = _DIGEST.findall(content)
    if len(found) != 1:
        return None, None
    stored = found[0]
    blanked = content.replace(b'"digest": "' + stored + b'"',
                              b'"digest": "' + DIGEST_PLACEHOLDER.encode() + b'"')
    return stored.decode(), hashlib.sha256(blanked).hexdigest()


def read_checked_metadata(content, path):
    """The metadata of an intact streamgen export, every field checked.

    Raises:
        NotAnExportError: naming the file and what is wrong.
    """
    def fail(what):
        return NotAnExportError(f"{path}: {what}")

    stored, computed = digest_of(content) if content[4:8] == b"TFL3" else (None, None)
    try:
        metadata = read_metadata(content) if content[4:8] == b"TFL3" else None
    except Exception:  # noqa: BLE001  (any parse failure of foreign bytes)
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        if stored is not None:  # ours, but the metadata did not parse
            raise fail("corrupt streamgen LiteRT export (its content does not "
                       "match its stored digest)")
        raise fail("not a streamgen LiteRT export (write one with "
                   "model.export_litert(path) or 'streamgen export')")
    if metadata.get("version") != FORMAT_VERSION:
        raise fail(f"streamgen LiteRT format version {checks.describe(metadata.get('version'))}; "
                   f"this streamgen reads version {FORMAT_VERSION}: export it again "
                   "(model.export_litert(path) or 'streamgen export')")
    if stored is None or stored != computed:
        raise fail("corrupt streamgen LiteRT export (its content does not match "
                   "its stored digest)")
    try:
        _check_fields(metadata)
    except (TypeError, ValueError) as error:
        raise fail(f"invalid streamgen LiteRT metadata: {error}") from None
    return metadata


def _check_fields(meta):
    """Types, ranges and names of every metadata field (`ValueError`)."""
    def integer(name, value, low=1, high=_MAX_WIDTH):
        if not checks.is_int(value) or not low <= value <= high:
            raise ValueError(f"{name}: expected an integer in [{low}, {high}], "
                             f"got {checks.describe(value)}")

    def sizes(name):
        value = meta.get(name)
        if not isinstance(value, list) or not 1 <= len(value) <= 16:
            raise ValueError(f"{name}: expected a list of 1 to 16 sizes, "
                             f"got {checks.describe(value)}")
        for size in value:
            integer(name, size)

    def names(name, expected):
        value = meta.get(name)
        if (not isinstance(value, dict) or sorted(value) != sorted(expected)
                or not all(isinstance(v, str) for v in value.values())
                or len(set(value.values())) != len(value)):
            raise ValueError(f"{name}: expected distinct tensor names for "
                             f"{list(expected)}, got {checks.describe(value)}")

    integer("input_size", meta.get("input_size"))
    integer("output_size", meta.get("output_size"))
    integer("max_steps", meta.get("max_steps"), high=checks.MAX_STEPS_LIMIT)
    sizes("outer_state_sizes")
    sizes("inner_state_sizes")
    if meta.get("frame_loss") not in samplers.FRAME_KINDS:
        raise ValueError(f"frame_loss: expected one of {list(samplers.FRAME_KINDS)}, got "
                         f"{checks.describe(meta.get('frame_loss'))}")
    if meta.get("draws_per_step") != samplers.draws_per_step(meta["frame_loss"],
                                                            meta["output_size"]):
        raise ValueError(f"draws_per_step: expected {samplers.draws_per_step(meta['frame_loss'], meta['output_size'])}, "
                         f"got {checks.describe(meta.get('draws_per_step'))}")
    if meta.get("decoder_state") not in ("reset", "carry"):
        raise ValueError(f"decoder_state: expected 'reset' or 'carry', got "
                         f"{checks.describe(meta.get('decoder_state'))}")
    criteria = meta.get("criteria")
    if not isinstance(criteria, list) or len(criteria) > 16:
        raise ValueError(f"criteria: expected a list, got {checks.describe(criteria)}")
    for index, criterion in enumerate(criteria):  # stored in full, threshold included
        config = criterion.get("config") if isinstance(criterion, dict) else None
        if not isinstance(config, dict) or criteria_lib.value_key(
                criterion.get("class_name")) not in config:
            raise ValueError(f"criteria[{index}]: expected a threshold in its config, "
                             f"got {checks.describe(criterion)}")
    meta["criteria"] = [criteria_lib.check_criterion_dict(c) for c in criteria]
    for key in ("signature", "fingerprint"):
        if not isinstance(meta.get(key), str):
            raise ValueError(f"{key}: expected a string, got {checks.describe(meta.get(key))}")
    names("inputs", INPUT_NAMES)
    names("outputs", OUTPUT_NAMES)


def _check_tensors(runtime, inputs, outputs, meta, sampling=True):
    """The signature's tensors: the names and shapes the metadata implies
    (without `params` and `uniforms` in the greedy step: `sampling` False)."""
    K, S = len(runtime.thresholds), runtime.state_size
    M, O, I = runtime.trained_max_steps, runtime.output_size, runtime.input_size
    expected = [
        (inputs, "inputs", "x", [-1, I], np.float32),
        (inputs, "inputs", "state", [-1, S], np.float32),
        (inputs, "inputs", "generate", [-1], np.bool_),
        (inputs, "inputs", "thresholds", [-1, K], np.float32),
        (inputs, "inputs", "caps", [-1], np.int32),
        (inputs, "inputs", "params", [-1, samplers.PARAMS], np.float32),
        (inputs, "inputs", "uniforms", [-1, M * runtime.draws_per_step], np.float32),
        (outputs, "outputs", "frames", [-1, M, O], np.float32),
        (outputs, "outputs", "lengths", [-1], np.int32),
        (outputs, "outputs", "state", [-1, S], np.float32),
    ]
    if not sampling:
        expected = [e for e in expected if not (e[1] == "inputs" and e[2] in SAMPLING_INPUTS)]
    count = len(INPUT_NAMES) - (0 if sampling else len(SAMPLING_INPUTS))
    if len(inputs) != count or len(outputs) != 3:
        step = "" if sampling else "greedy step's "
        raise NotAnExportError(f"{runtime.path}: the {step}signature has {len(inputs)} "
                               f"inputs and {len(outputs)} outputs, expected {count} and 3")
    for details, group, key, shape, dtype in expected:
        name = meta[group][key]
        detail = details.get(name)
        if (detail is None or [int(d) for d in detail["shape_signature"]] != shape
                or detail["dtype"] != dtype):
            got = None if detail is None else ([int(d) for d in detail["shape_signature"]],
                                               np.dtype(detail["dtype"]).name)
            raise NotAnExportError(
                f"{runtime.path}: tensor {name!r} ({group[:-1]} {key!r}) does not "
                f"match the metadata: expected shape {shape} {np.dtype(dtype).name}, "
                f"got {got}")
