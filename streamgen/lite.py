"""`LiteStream`: streaming decoding of a `.tflite` export, without TensorFlow.

`sg.LiteStream(path)` runs the file that `StreamGen.export_litert` writes
with the LiteRT interpreter (`ai-edge-litert`) and numpy alone: importing
this module, or using it, never imports TensorFlow. It has the API of
`sg.Stream` (`step`, `feed`, `reset`, `get_state`, `set_state`,
`batch_size`, `stop=` and `max_steps=` overrides) and its outputs equal the
TensorFlow path's to float32 round-off, with the same lengths.

Each `step` is one interpreter invocation of the whole outer step (model_a's
cell, then model_b's inner loop with its stop checks); the state travels in
and out as one packed numpy array (split only by `get_state`).
"""

import json

import numpy as np

from streamgen import _checks
from streamgen import _quiet
from streamgen._stream_base import StreamBase

METADATA_NAME = "streamgen"  # entry of the .tflite metadata table
SIGNATURE = "serving_default"  # the converter's name for the one signature
FORMAT = "streamgen-litert"
FORMAT_VERSION = 1


class LiteStream(StreamBase):
    """Step-by-step decoding of a LiteRT export, with restorable state.

    A fresh (or `reset`) stream takes its batch size from the first input:
    `x` of shape `(input_size,)` is one stream (batch 1), `(B, input_size)`
    is `B` streams stepped together, each row stopping on its own. Later
    inputs must keep that batch size (a new batch size re-plans the
    interpreter's memory once).

    Args:
        path: str or path-like, a `.tflite` file written by
            `StreamGen.export_litert` (or `streamgen export --format litert`).
        stop: stop criteria for this stream, overriding the thresholds
            stored in the file: `sg.StopCriterion` objects (or their
            serialized dicts, `{"class_name": "StopHead", "config":
            {"threshold": 0.7}}`, which need no TensorFlow), of the same
            kinds, in the same order, as were exported. `None` uses the
            exported thresholds.
        max_steps: optional int in `[1, max_steps of the export]`, a lower
            cap.
        num_threads: threads of the interpreter. Defaults to 1, the
            fastest at batch 1; more can help for large batches.

    Attributes:
        criteria: the stop criteria in use, as
            `[{"class_name": "StopHead", "config": {"threshold": 0.7}}, ...]`.
        max_steps: the runtime cap.
        input_size, output_size, decoder_state: from the export.
        metadata: everything the export stored (a dict).

    Raises:
        ImportError: if `ai-edge-litert` is not installed.
        ValueError: if the file is not a streamgen LiteRT export, `stop`
            has other kinds than the export (re-export to change them), or
            `max_steps` is out of range.

    Example:

    >>> model.export_litert("model.tflite")
    >>> s = sg.LiteStream("model.tflite", stop=[sg.StopHead(0.7)])
    >>> out = s.step(np.zeros(3))   # np.ndarray (L_0, output_size)
    >>> saved = s.get_state()
    >>> a = s.step(x1); s.set_state(saved); b = s.step(x1)   # a == b
    """

    def __init__(self, path, stop=None, max_steps=None, num_threads=1):
        import_schema()  # the clear ImportError first
        from ai_edge_litert.interpreter import Interpreter

        with open(path, "rb") as file:
            content = file.read()
        self.metadata = _read_checked_metadata(content, path)
        meta = self.metadata
        self.input_size = meta["input_size"]
        self.output_size = meta["output_size"]
        self.decoder_state = meta["decoder_state"]
        self._spec = _Spec(self.input_size, meta["max_steps"])
        self.criteria = resolve_stop(stop, meta["criteria"])
        self.max_steps = _checks.resolve_cap(self._spec, max_steps)
        self._sizes = {"outer": meta["outer_state_sizes"], "inner": meta["inner_state_sizes"]}

        # LiteRT logs "Created TensorFlow Lite XNNPACK delegate for CPU." on
        # stderr, once per process, when it first plans an interpreter (in
        # `_allocate`, also silenced); its creation is silenced as well, so
        # that no LiteRT version's eager set-up reaches the user's stderr.
        with _quiet.silenced_fd2():
            self._interpreter = Interpreter(model_content=content, num_threads=num_threads)
        runner = self._interpreter.get_signature_runner(meta["signature"])
        inputs = runner.get_input_details()  # name -> details (tensor index)
        outputs = {name: d["index"] for name, d in runner.get_output_details().items()}
        names_in, names_out = meta["inputs"], meta["outputs"]
        self._x = inputs[names_in["x"]]["index"]
        self._state_input = inputs[names_in["state"]]["index"]
        self._decode = inputs[names_in["decode"]]["index"]
        self._thresholds_input = inputs[names_in["thresholds"]]["index"]
        self._cap = inputs[names_in["cap"]]["index"]
        self._batched = [  # (index, shape without the batch dimension)
            (d["index"], list(d["shape_signature"][1:]))
            for d in inputs.values()
            if len(d["shape_signature"]) and d["shape_signature"][0] == -1
        ]
        self._frames = outputs[names_out["frames"]]
        self._lengths = outputs[names_out["lengths"]]
        self._state_output = outputs[names_out["state"]]
        # Column ranges of each state tensor in the packed `(B, S)` state.
        widths = self._sizes["outer"] + self._sizes["inner"]
        self._offsets = np.cumsum([0] + widths).tolist()
        self._num_outer = len(self._sizes["outer"])
        self._thresholds = np.array(
            [c["config"]["threshold"] for c in self.criteria], np.float32
        ).reshape([len(self.criteria)])
        self._allocated = None  # batch size the interpreter is planned for
        self._decode_masked = False  # whether `decode` holds a False
        self.reset()

    def get_state(self):
        """The carried state, as a nest of numpy arrays (copies).

        Returns:
            `{"outer": [...], "inner": [...]}`, each array `(B, size)`.
            Before the first step, the initial state for one row.
        """
        state = self._state if self._state is not None else self._initial_state(
            self._batch_size or 1)
        parts = [state[:, start:end].copy()
                 for start, end in zip(self._offsets[:-1], self._offsets[1:])]
        return {"outer": parts[:self._num_outer], "inner": parts[self._num_outer:]}

    def set_state(self, state):
        """Restores a state from `get_state()`; decoding resumes exactly.

        Args:
            state: `{"outer": [...], "inner": [...]}` with the shapes
                `get_state()` returns (any batch size, the same for all).
                States of `sg.Stream` and `LiteStream` are interchangeable.

        Raises:
            ValueError: if the nest or a shape does not match this model.
        """
        restored, batch = _checks.check_state(state, self._sizes)
        self._restore(np.concatenate(restored["outer"] + restored["inner"], axis=1), batch)

    def _run(self, rows, state, decode):
        batch = rows.shape[0]
        if batch != self._allocated:  # (`set_state` may change the batch size)
            self._allocate(batch)
        interpreter = self._interpreter
        set_tensor = interpreter.set_tensor  # copies, from any memory layout
        set_tensor(self._x, rows)
        set_tensor(self._state_input, state)
        if decode is not True or self._decode_masked:
            rows_decoded = np.broadcast_to(np.asarray(decode, bool), (batch,))
            set_tensor(self._decode, rows_decoded)
            self._decode_masked = not rows_decoded.all()
        interpreter.invoke()
        get_tensor = interpreter.get_tensor  # copies
        return (get_tensor(self._frames), get_tensor(self._lengths),
                get_tensor(self._state_output))

    def _initial_state(self, batch):
        return np.zeros((batch, self._offsets[-1]), np.float32)

    def _allocate(self, batch):
        """Plans the interpreter for `batch` rows; sets the constant inputs."""
        interpreter = self._interpreter
        for index, rest in self._batched:
            interpreter.resize_tensor_input(index, [batch] + rest)
        with _quiet.silenced_fd2():  # LiteRT logs "Created ... XNNPACK delegate" here
            interpreter.allocate_tensors()
        # Inputs keep their values between invocations: set these once.
        interpreter.set_tensor(self._thresholds_input, self._thresholds)
        interpreter.set_tensor(self._cap, np.array(self.max_steps, np.int32))
        interpreter.set_tensor(self._decode, np.ones(batch, bool))
        self._decode_masked = False
        self._allocated = batch


class _Spec:
    """What the shared validation reads: `input_size`, trained `max_steps`."""

    def __init__(self, input_size, max_steps):
        self.input_size = input_size
        self.max_steps = max_steps


def _is_one_criterion(stop):
    return isinstance(stop, dict) or hasattr(stop, "get_config")


def resolve_stop(stop, exported):
    """Checks a `stop=` override against the exported criteria.

    Args:
        stop: `None`, a criterion (a `sg.StopCriterion` or its dict
            `{"class_name": ..., "config": {...}}`), or a list of them.
        exported: the criteria stored in the file, as such dicts.

    Returns:
        A list of `{"class_name": str, "config": dict}`.

    Raises:
        TypeError: if an element is not a stop criterion.
        ValueError: if a threshold is invalid, or the kinds differ from the
            exported ones.
    """
    if stop is None:
        return [dict(c) for c in exported]
    criteria = []
    for item in _checks.stop_items(stop, _is_one_criterion):
        if isinstance(item, dict) and isinstance(item.get("class_name"), str):
            criterion = {"class_name": item["class_name"], "config": dict(item.get("config", {}))}
            _check_threshold(criterion)
        elif hasattr(item, "get_config") and hasattr(item, "threshold"):
            criterion = {"class_name": type(item).__name__, "config": item.get_config()}
        else:
            raise _checks.bad_stop_item(item)
        criteria.append(criterion)
    if [_kind(c) for c in criteria] != [_kind(c) for c in exported]:
        raise ValueError(
            "Received an invalid value for argument `stop`: this LiteRT file "
            f"was exported with the stop criteria {_describe_kinds(exported)}, "
            f"got {_describe_kinds(criteria)}. Only thresholds can change at "
            "run time; to use other kinds of criteria, re-export the model "
            "with model.export_litert(path, stop=[...])."
        )
    return criteria


def import_schema():
    """`ai_edge_litert.schema_py_generated`, or a clear ImportError."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as error:
        raise ImportError(
            "LiteRT export and `sg.LiteStream` need the `ai-edge-litert` "
            "package: pip install 'streamgen[litert]'."
        ) from error
    return schema_py_generated


def read_metadata(content):
    """The streamgen metadata in a `.tflite` file's bytes, or `None`."""
    schema = import_schema()
    root = schema.Model.GetRootAs(content, 0)
    for index in range(root.MetadataLength()):
        entry = root.Metadata(index)
        if entry.Name() == METADATA_NAME.encode("ascii"):
            data = root.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode("utf-8"))
    return None


def _read_checked_metadata(content, path):
    try:
        metadata = read_metadata(content) if content[4:8] == b"TFL3" else None
    except Exception:  # noqa: BLE001  (any parse failure of foreign bytes)
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(
            f"Received an invalid value for argument `path`: {str(path)!r} is "
            "not a streamgen LiteRT export (write one with "
            "model.export_litert(path))."
        )
    if metadata.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"Received an invalid value for argument `path`: {str(path)!r} "
            f"has streamgen LiteRT format version {metadata.get('version')!r}; "
            f"this streamgen reads version {FORMAT_VERSION}. Re-export it."
        )
    return metadata


def _kind(criterion):
    config = {k: v for k, v in criterion["config"].items() if k != "threshold"}
    return (criterion["class_name"], tuple(sorted(config.items())))


def _describe_kinds(criteria):
    parts = []
    for c in criteria:
        options = ", ".join(f"{k}={v!r}" for k, v in sorted(c["config"].items())
                            if k != "threshold")
        parts.append(f"{c['class_name']}({options})")
    return "[" + ", ".join(parts) + "]"


def _check_threshold(criterion):
    """The checks of `sg.StopHead` / `sg.L2Norm` for a criterion's dict."""
    owner, value = criterion["class_name"], criterion["config"].get("threshold")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or number != number:
        raise ValueError(
            f"Received an invalid value for argument `threshold` of {owner}, "
            f"expected a number, got {value!r}."
        )
    if owner == "StopHead" and not 0.0 <= number <= 1.0:
        raise ValueError(
            "Received an invalid value for argument `threshold` of "
            f"StopHead, expected a probability in [0, 1], got {value!r}."
        )
    if owner == "L2Norm" and number < 0:
        raise ValueError(
            "Received an invalid value for argument `threshold` of L2Norm, "
            f"expected a non-negative number, got {value!r}."
        )
    criterion["config"]["threshold"] = number
