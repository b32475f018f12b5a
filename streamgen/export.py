"""LiteRT export: the one-outer-step function as a `.tflite` file.

The exported function is `decode.outer_step` with everything explicit:

| input | shape | |
| --- | --- | --- |
| `x` | `(B, input_size)` float32 | |
| `state` | `(B, S)` float32 | model_a's then model_b's state tensors, side by side |
| `decode` | `(B,)` bool | False: skip model_b for that row |
| `thresholds` | `(len(criteria),)` float32 | one per stop criterion |
| `cap` | `()` int32 | runtime cap in `[1, max_steps]` |

and outputs `frames (B, max_steps, output_size)`, `lengths (B,)` int32 and
the new `state (B, S)`. One packed state tensor (`S` = the sum of the state
sizes) instead of one per state tensor saves a copy in and a copy out per
state tensor and step, which at batch 1 costs as much as a layer. `B` is
dynamic (`-1` in the file; the runtime resizes it). Only TFLite builtin ops
are used, so no Flex delegate is needed.

What `sg.LiteStream` needs to run the file alone (sizes, the stop criteria
kinds with their default thresholds, the tensor names) is stored as JSON in
the model's metadata table under the name `"streamgen"`.
"""

import json

import keras
import numpy as np

from streamgen import decode as decode_lib
from streamgen import _quiet
from streamgen import lite
from streamgen._quiet import import_tensorflow

tf = import_tensorflow()


def export_litert(model, path, stop=None):
    """Writes a `.tflite` file of `model`'s outer step for `sg.LiteStream`.

    Args:
        model: a `sg.StreamGen`.
        path: str or path-like, the file to write (usually `*.tflite`).
        stop: the stop criteria to bake in: a `sg.StopCriterion`, a list of
            them, or `[]` for the cap alone; `None` uses the model's. Their
            *kinds* are fixed in the file; their thresholds are inputs (the
            values given here are the defaults `LiteStream` uses).

    Returns:
        The metadata stored in the file, a dict.

    Raises:
        ImportError: if `ai-edge-litert` is not installed (it writes the
            metadata and checks the file).
        RuntimeError: if the converted file does not reproduce the model's
            state update (a converter problem; nothing is written).

    Example:

    >>> model.export_litert("model.tflite", stop=[sg.StopHead(0.5)])
    >>> s = sg.LiteStream("model.tflite")
    >>> out = s.step(np.zeros(model.input_size))   # (L_0, output_size)
    """
    schema = lite.import_schema()
    criteria = decode_lib.resolve_stop(model, stop)
    specs = _input_specs(model, len(criteria))
    function = tf.function(_flat_step(model, criteria), input_signature=specs)
    concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()

    names = {  # tensor names in the file's signature `lite.SIGNATURE`
        "inputs": {name: name for name in
                   ("x", "state", "decode", "thresholds", "cap")},
        # The flat outputs of `_flat_step`, in order.
        "outputs": {"frames": "output_0", "lengths": "output_1", "state": "output_2"},
    }
    _check_export(model, concrete, content, names)
    metadata = {
        "format": lite.FORMAT,
        "version": lite.FORMAT_VERSION,
        "input_size": model.input_size,
        "output_size": model.output_size,
        "max_steps": model.max_steps,
        "outer_state_sizes": list(model.outer_state_sizes),
        "inner_state_sizes": list(model.inner_state_sizes),
        "decoder_state": model.decoder_state,
        "cell": model.cell,
        "criteria": [
            {"class_name": type(c).__name__, "config": c.get_config()} for c in criteria
        ],
        "signature": lite.SIGNATURE,
        **names,
    }
    content = _with_metadata(schema, content, json.dumps(metadata).encode("utf-8"))
    with open(path, "wb") as file:
        file.write(content)
    return metadata


def _input_specs(model, num_criteria):
    width = sum(model.outer_state_sizes) + sum(model.inner_state_sizes)
    return [
        tf.TensorSpec([None, model.input_size], tf.float32, name="x"),
        tf.TensorSpec([None, width], tf.float32, name="state"),
        tf.TensorSpec([None], tf.bool, name="decode"),
        tf.TensorSpec([num_criteria], tf.float32, name="thresholds"),
        tf.TensorSpec([], tf.int32, name="cap"),
    ]


def _flat_step(model, criteria):
    """`outer_step` on a packed state, with a flat tuple of outputs."""
    sizes = list(model.outer_state_sizes) + list(model.inner_state_sizes)
    num_outer = len(model.outer_state_sizes)
    weights = [(v, v.numpy()) for v in model.variables]  # read now, eagerly

    def step(x, state, decode, thresholds, cap):
        # Every weight is read as a constant inside this scope, so the file
        # holds plain constants (no resource variables to initialize).
        mapping = [(v, tf.constant(value)) for v, value in weights]
        with keras.StatelessScope(state_mapping=mapping):
            parts = tf.split(state, sizes, axis=1) if len(sizes) > 1 else [state]
            # No forced lengths (`stop_at=None`): streaming never forces them,
            # and leaving the check out saves two ops per inner step.
            frames, lengths, outer_state, inner_state = decode_lib.outer_step(
                model, criteria, x, parts[:num_outer], parts[num_outer:], decode,
                None, thresholds, cap,
            )
            state = tf.concat(list(outer_state) + list(inner_state), axis=1)
            return frames, lengths, state

    return step


def _check_export(model, concrete, content, names):
    """Runs the converted file once against the TensorFlow step.

    The probe uses random states and `decode` all False, so every output is
    exactly determined without any stop decision (model_a's update, model_b's
    state passed through, empty frames): it checks that each signature
    output is the one `names` says, and that the conversion is faithful.

    Raises:
        RuntimeError: on any mismatch.
    """
    from ai_edge_litert.interpreter import Interpreter

    batch = 2
    rng = np.random.default_rng(0)
    specs = concrete.structured_input_signature[0]
    feeds = {}
    for spec in specs:
        shape = [batch if d is None else d for d in spec.shape]
        feeds[spec.name] = rng.normal(size=shape).astype(np.float32)
    feeds["decode"] = np.zeros(batch, bool)
    feeds["cap"] = np.array(model.max_steps, np.int32)
    expected = [np.asarray(t) for t in concrete(*[tf.constant(feeds[s.name]) for s in specs])]

    interpreter = Interpreter(model_content=content)
    runner = interpreter.get_signature_runner(lite.SIGNATURE)
    with _quiet.silenced_fd2():  # LiteRT logs "Created ... XNNPACK delegate"
        got = runner(**feeds)
    for name, want in zip(("frames", "lengths", "state"), expected):
        value = got.get(names["outputs"][name])
        if value is None or value.shape != want.shape or not np.allclose(value, want, atol=1e-5):
            raise RuntimeError(
                f"The converted LiteRT model does not reproduce output {name!r} "
                "of the TensorFlow step; nothing was written."
            )


def _with_metadata(schema, content, data):
    """`content` with `data` in its metadata table under `lite.METADATA_NAME`."""
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = lite.METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != lite.METADATA_NAME.encode()]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
