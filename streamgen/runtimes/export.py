"""LiteRT export: the one-outer-step function as a `.tflite` file.

The exported function is the outer step (`runtimes.tf.outer_step`: model_a's
cell, then model_b's inner steps with the stop checks) with everything
explicit:

| input | shape | |
| --- | --- | --- |
| `x` | `(B, input_size)` float32 | |
| `state` | `(B, S + 4)` float32 | model_a's then model_b's state tensors, side by side, then the row's seed and position (`randomness.encode`) |
| `generate` | `(B,)` bool | False: skip model_b for that row |
| `thresholds` | `(B, 4 + C)` float32 | each row's stop thresholds: the four built-in kinds (`StopSample` included), then the `C` criteria of user-written classes (`streamgen.criteria`) |
| `caps` | `(B,)` int32 | each row's cap in `[0, max_steps]` |
| `params` | `(B, 4)` float32 | each row's sampler (`samplers.row_params`) |
| `uniforms` | `(B, max_steps * draws_per_step)` float32 | each row's random numbers at its position (`randomness.uniforms`), drawn by the caller |

and outputs `frames (B, max_steps, output_size)`, `lengths (B,)` int32 and
the new `state (B, S + 4)` (its position one further). The file holds no
random op: the randomness is an input, so LiteRT computes the same function
of the same numbers as TensorFlow (format version 4). One packed state tensor (`S` = the sum of the state
sizes) instead of one per state tensor saves a copy in and a copy out per
state tensor and step, which at batch 1 costs as much as a layer. `B` is
dynamic (`-1` in the file; the runtime resizes it). Only TFLite builtin ops
are used, so no Flex delegate is needed.

Every file holds all four built-in stop kinds (`StopHead`, `L2Norm`
above and below; format version 3), so each row of a call can use any mix
of them; only criteria of the user's own classes are baked in. What
`sg.LiteStream` needs to run the file alone (sizes, the default stop
criteria, the tensor names, the model's fingerprint) is stored as JSON in the model's metadata table under the name
`"streamgen"`, with a SHA-256 digest of the whole file that `LiteRuntime`
checks before the interpreter sees a byte (`lite.digest_of`).

The greedy step (format version 5). The metadata table's entry
`"streamgen_greedy"` (`lite.GREEDY_NAME`) holds a second `.tflite` model:
the same step without `params` and `uniforms` (the first five inputs, the
same outputs), greedy frames and no `StopSample` test. `LiteRuntime` runs
it for calls where no row samples, the default: the same outputs (tested
against the full step on greedy rows) for ~1 us less per call at batch 1
(the `StopSample` test's operators run outside XNNPACK's partition; see
`benchmarks/README.md`). LiteRT's Python API runs only a model's first
subgraph without resizing and allocating every input on each call, hence
a second model rather than a second signature. The price: the file and
the export's conversion time are about twice as large.

The inner loop. Up to `runtimes.tf.UNROLL_MAX_STEPS` (16) inner steps, which
covers the default `max_steps=9`, the file holds the inner steps *unrolled*
(`runtimes.tf.unrolled_outer_step`, as TensorFlow's own step): every row
runs all `max_steps` steps as one straight chain of ops, and the stop
tests, the lengths, the frames' mask and the carried state are computed
once, at the end. At batch 1 and
`max_steps=9` that is about as fast as a `WHILE` loop that stops after its
first inner step, and about twice as fast as one that runs all nine
(`benchmarks/lite_breakdown.py`, `benchmarks/README.md`): LiteRT's `WHILE`
costs ~14 us per call (its cond and body sub-graphs are re-allocated and
released on every call) and ~4 us per iteration (two sub-graph invocations,
the loop variables copied between them, and per-step masks: selects and
gathers, which the XNNPACK delegate does not take, between the cell's ops),
while an unrolled step costs ~1.7 us (the chain of all of them is one
XNNPACK partition). The price: every inner step runs even when every row has
stopped, so the cost grows with `max_steps`, not with the lengths decoded.
Above `UNROLL_MAX_STEPS` the file therefore holds `runtimes.tf.outer_step`'s
`tf.while_loop`, which exits as soon as every row has stopped. Both give
`sg.Stream`'s outputs.
"""

import hashlib
import json

import keras
import numpy as np

from streamgen.runtimes import tf as tf_runtime
from streamgen.runtimes.base import RANDOM_COLUMNS
from streamgen import samplers
from streamgen import quiet
from streamgen.runtimes import lite
from streamgen import saving
from streamgen import stopping
from streamgen import criteria as criteria_lib
from streamgen.criteria import criterion_dict
from streamgen.quiet import import_tensorflow

tf = import_tensorflow()


def export_litert(model, path, stop=None):
    """Writes a `.tflite` file of `model`'s outer step for `sg.LiteStream`.

    Args:
        model: a `sg.StreamGen`.
        path: str or path-like, the file to write (usually `*.tflite`).
        stop: the default stop criteria: a `sg.StopCriterion`, a list of
            them, or `[]` for the cap alone; `None` uses the model's. Every
            built-in kind is in the file whatever this says (a stream may
            use any mix); criteria of the user's own classes are baked in.

    Returns:
        The metadata stored in the file, a dict.

    Raises:
        ImportError: if `ai-edge-litert` is not installed (it writes the
            metadata and checks the file).
        RuntimeError: if the converted file does not reproduce the model's
            state update (a converter problem; nothing is written).

    Example:

    >>> metadata = model.export_litert("model.tflite", stop=[sg.StopHead(0.5)])
    >>> s = sg.LiteStream("model.tflite")
    >>> out = s.step(np.zeros(model.input_size))   # (L_0, output_size)
    """
    schema = lite.import_schema()
    criteria = stopping.resolve_stop(model.stop, stop)
    custom = tuple(c for c in criteria  # the user's own classes, baked in
                   if not criteria_lib.is_built_in(criterion_dict(c)))
    draws = samplers.draws_per_step(model.frame_loss, model.output_size)
    unrolled = tf_runtime.unrolls(model)
    names = {  # tensor names in the file's signature `lite.SIGNATURE`
        "inputs": {name: name for name in lite.INPUT_NAMES},
        # The flat outputs of `_flat_step`, in order.
        "outputs": {"frames": "output_0", "lengths": "output_1", "state": "output_2"},
    }
    step = _flat_step(model, custom, unrolled)  # the weights read once, for both steps
    count = criteria_lib.COUNT + len(custom)
    content = _converted(model, step, tf_runtime.step_signature(model, count, sampling=True),
                         names)
    greedy = _converted(model, step, tf_runtime.step_signature(model, count), names)
    metadata = {
        "format": lite.FORMAT,
        "version": lite.FORMAT_VERSION,
        "input_size": model.input_size,
        "output_size": model.output_size,
        "max_steps": model.max_steps,
        "outer_state_sizes": list(model.outer_state_sizes),
        "inner_state_sizes": list(model.inner_state_sizes),
        "decoder_state": model.decoder_state,
        "frame_loss": model.frame_loss,
        "draws_per_step": draws,
        "cell": model.cell,
        "inner_loop": "unrolled" if unrolled else "while",
        "criteria": [criterion_dict(c) for c in criteria],
        "signature": lite.SIGNATURE,
        "fingerprint": model.fingerprint(),
        **names,
        "digest": lite.DIGEST_PLACEHOLDER,
    }
    content = _with_metadata(schema, content, {lite.METADATA_NAME: json.dumps(metadata).encode(),
                                               lite.GREEDY_NAME: greedy})
    # The digest of the file with the placeholder, then put in its place.
    metadata["digest"] = hashlib.sha256(content).hexdigest()
    content = content.replace(f'"digest": "{lite.DIGEST_PLACEHOLDER}"'.encode(),
                              f'"digest": "{metadata["digest"]}"'.encode())
    saving.write_bytes(path, content)
    return metadata


def _converted(model, step, specs, names):
    """The `.tflite` bytes of `step` (`_flat_step`) traced with the input
    signature `specs` (the full step's, or the greedy step's: without
    `params` and `uniforms`), converted and checked (`_check_export`)."""
    function = tf.function(step, input_signature=specs)
    concrete = function.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # The converter logs dozens of progress lines ("Reading SavedModel
    # from ...") on fd 2; a failure raises with its message.
    with quiet.silenced_fd2():
        content = converter.convert()
    _check_export(model, concrete, content, names)
    return content


def _flat_step(model, criteria, unrolled):
    """The streaming step (`runtimes.tf.packed_step`, or `sampling_step`
    with `params` and `uniforms`) with the model's weights as constants,
    traced with LiteRT builtin ops only; `unrolled` as `packed_step`'s.
    Called without `params` and `uniforms` (the greedy step's signature):
    every row greedy, no `StopSample` test, no draw.
    """
    weights = [(v, v.numpy()) for v in model.variables]  # read now, eagerly

    def step(x, state, generate, thresholds, caps, params=None, uniforms=None):
        # Every weight is read as a constant inside this scope, so the file
        # holds plain constants (no resource variables to initialize).
        mapping = [(v, tf.constant(value)) for v, value in weights]
        sampling = None if uniforms is None else (params, uniforms)
        with keras.StatelessScope(state_mapping=mapping), tf_runtime.litert_builtins():
            return tf_runtime.packed_step(model, criteria, x, state, generate, thresholds, caps,
                                          sampling=sampling, unrolled=unrolled)

    return step


def _check_export(model, concrete, content, names):
    """Runs the converted file against the TensorFlow step it came from.

    Two probes on random inputs and states, each exactly determined
    without any stop decision: `generate` all False (model_a's update,
    model_b's state passed through, empty frames), which also checks that
    each signature output is the one `names` says; and `generate` all True
    with `cap` 1, whose state output (model_a's update, then one inner
    step, run whether or not it is the STOP step) checks the inner cell.

    Raises:
        RuntimeError: on any mismatch.
    """
    from ai_edge_litert.interpreter import Interpreter

    batch = 2
    rng = np.random.default_rng(0)
    specs = [s for s in concrete.structured_input_signature[0] if s is not None]
    feeds = {}
    for spec in specs:
        shape = [batch if d is None else d for d in spec.shape]
        feeds[spec.name] = rng.normal(size=shape).astype(np.float32)
    if "uniforms" in feeds:  # valid sampler rows and draws (the full step)
        feeds["params"] = np.tile(np.array([[0.0, 1.0, 0.0, 1.0]], np.float32), (batch, 1))
        feeds["uniforms"] = rng.uniform(0.01, 0.99, size=feeds["uniforms"].shape).astype(
            np.float32)
    # whole seed and position halves
    feeds["state"][:, -RANDOM_COLUMNS:] = rng.integers(0, 65535, (batch, RANDOM_COLUMNS))
    probes = [
        ({"generate": np.zeros(batch, bool), "caps": np.full(batch, model.max_steps, np.int32)},
         ("frames", "lengths", "state")),
        ({"generate": np.ones(batch, bool), "caps": np.ones(batch, np.int32)}, ("state",)),
    ]
    # LiteRT logs "Created TensorFlow Lite XNNPACK delegate for CPU." on
    # stderr, once per process, when it first plans an interpreter.
    with quiet.silenced_fd2():
        runner = Interpreter(model_content=content).get_signature_runner(lite.SIGNATURE)
        results = [runner(**{**feeds, **changes}) for changes, _ in probes]
    for (changes, checked), got in zip(probes, results):
        inputs = {**feeds, **changes}
        expected = concrete(*[tf.constant(inputs[s.name]) for s in specs])
        expected = dict(zip(("frames", "lengths", "state"), expected))
        for name in checked:
            want, value = np.asarray(expected[name]), got.get(names["outputs"][name])
            if (value is None or value.shape != want.shape
                    or not np.allclose(value, want, atol=1e-5)):
                raise RuntimeError(
                    f"The converted LiteRT model does not reproduce output {name!r} "
                    "of the TensorFlow step; nothing was written."
                )


def _with_metadata(schema, content, entries):
    """`content` with each `{name: bytes}` of `entries` in its metadata table."""
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    names = [name.encode() for name in entries]
    model.metadata = [m for m in (model.metadata or []) if m.name not in names]
    for name, data in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(data, np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
