"""Compiled decoding: one outer step, and whole sequences.

`outer_step` is the whole per-input computation: model_a's cell once, then
model_b's inner loop with its stop checks, a per-row `running` mask and an
early exit once every row has stopped. Frames are written into a fixed-size
buffer `(B, max_steps, output_size)` (no `TensorArray`), which keeps the
function convertible to LiteRT and compilable by XLA.

`CompiledFunctions` wraps it in `tf.function`s with a fixed input signature
(batch dimension `None`), one per *kind* of stop criteria (thresholds are
inputs, so changing them does not retrace).
"""

import functools

import numpy as np

from streamgen import stopping
from streamgen._checks import check_inputs, check_lengths, resolve_cap  # noqa: F401
from streamgen._quiet import import_tensorflow

tf = import_tensorflow()


def outer_step(model, criteria, x, outer_state, inner_state, decode, stop_at,
               thresholds, cap):
    """One outer step: `x[i] -> Out[i]`, with explicit state in and out.

    Args:
        model: a `sg.StreamGen`.
        criteria: tuple of `sg.StopCriterion` (their kinds are baked in).
        x: float tensor `(B, input_size)`.
        outer_state: list of float tensors `(B, size)`, model_a's state.
        inner_state: list of float tensors `(B, size)`, model_b's state
            (used in `"carry"` mode).
        decode: bool tensor `(B,)`; rows where it is False skip model_b
            (`len(Out[i]) == 0`, inner state unchanged).
        stop_at: int32 tensor `(B,)`; forces the STOP token at inner step
            `stop_at` (the step runs but is not emitted). `max_steps` or more
            means "not forced"; `None` (at trace time) leaves it out of the
            graph.
        thresholds: float tensor `(len(criteria),)`.
        cap: int32 scalar tensor in `[0, max_steps]`: no inner step `j >= cap`
            runs.

    Returns:
        `(frames, lengths, outer_state, inner_state)`: frames float
        `(B, max_steps, output_size)`, zero past each row's length; lengths
        int32 `(B,)`; the new states as lists.
    """
    M = model.max_steps
    batch = tf.shape(x)[0]
    outer_state, ir, start_state = outer_update(model, x, outer_state, inner_state)

    # Loop invariants, hoisted: the body is run up to M times per call, and
    # at batch 1 its cost is the number of ops in it, not their size.
    cap = tf.minimum(cap, M)  # the hard bound beside the stop condition
    limits = [thresholds[k] for k in range(len(criteria))]
    slots = tf.constant(np.eye(M, dtype=np.float32)[:, None, :, None])  # (M, 1, M, 1)

    def cond(j, running, previous, state, frames, lengths):
        return (j < cap) & tf.reduce_any(running)

    def body(j, running, previous, state, frames, lengths):
        # `running`: rows for which inner step j runs (not yet stopped).
        inner_input = tf.concat([ir, previous], axis=-1)  # (B, ir + O)
        output, new_state = model.inner_cell(inner_input, list(state))
        frame, stop_logit = model.inner_heads(output)  # (B, O), (B,)
        stops = [criterion.fires(frame, stop_logit, limit)  # each (B,)
                 for criterion, limit in zip(criteria, limits)]
        if stop_at is not None:
            stops.append(j == stop_at)  # the forced STOP
        emit = running  # rows for which step j is a frame: no STOP fired
        if stops:
            emit = running & ~functools.reduce(tf.logical_or, stops)
        lengths = tf.where(emit, j + 1, lengths)
        # `expand_dims`, not `[:, None]`, which costs two LiteRT ops.
        emitted = tf.where(tf.expand_dims(emit, 1), frame, 0.0)  # (B, O)
        # Slot j of the buffer: a broadcast multiply-add, cheaper than a
        # broadcast select on large batches.
        frames += tf.gather(slots, j) * tf.expand_dims(emitted, 1)  # (B, M, O)
        rows = tf.expand_dims(running, 1)  # (B, 1)
        state = [tf.where(rows, new, old) for new, old in zip(_as_list(new_state), state)]
        # A stopped row never runs again, so its `previous` is never read.
        return j + 1, emit, frame, state, frames, lengths

    loop_vars = (
        tf.constant(0),
        tf.cast(decode, tf.bool),  # rows not decoded end at once
        tf.zeros([batch, model.output_size]),  # previous frame, zeros at j = 0
        start_state,
        tf.zeros([batch, M, model.output_size]),
        tf.zeros([batch], tf.int32),
    )
    _, _, _, end_state, frames, lengths = tf.while_loop(cond, body, loop_vars)
    if model.decoder_state == "reset":
        # Rows that were not decoded keep their previous inner state too.
        decoded = tf.expand_dims(tf.cast(decode, tf.bool), 1)  # (B, 1)
        end_state = [tf.where(decoded, new, old) for new, old in zip(end_state, inner_state)]
    return frames, lengths, outer_state, end_state


def decode_sequences(model, criteria, x, stop_at, thresholds, cap):
    """Runs `outer_step` over `T` steps inside the graph, from zero state.

    Args:
        x: float tensor `(B, T, input_size)`.
        stop_at: int32 tensor `(B, T)`, as in `outer_step`.
        thresholds, cap: as in `outer_step`.

    Returns:
        `(frames (B, T, max_steps, output_size), lengths (B, T))`.
    """
    batch, steps = tf.shape(x)[0], tf.shape(x)[1]
    state = model.get_initial_state(1)
    outer_state = [tf.zeros([batch, s.shape[1]]) for s in state["outer"]]
    inner_state = [tf.zeros([batch, s.shape[1]]) for s in state["inner"]]
    decode = tf.ones([batch], tf.bool)
    x_time_major = tf.transpose(x, [1, 0, 2])  # (T, B, I)
    stop_at_time_major = tf.transpose(stop_at, [1, 0])  # (T, B)

    def body(t, outer_state, inner_state, frames_ta, lengths_ta):
        frames, lengths, outer_state, inner_state = outer_step(
            model, criteria, x_time_major[t], outer_state, inner_state,
            decode, stop_at_time_major[t], thresholds, cap,
        )
        return (t + 1, outer_state, inner_state,
                frames_ta.write(t, frames), lengths_ta.write(t, lengths))

    _, _, _, frames_ta, lengths_ta = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), outer_state, inner_state,
         tf.TensorArray(tf.float32, size=steps),
         tf.TensorArray(tf.int32, size=steps)),
    )
    frames = tf.transpose(frames_ta.stack(), [1, 0, 2, 3])  # (B, T, M, O)
    lengths = tf.transpose(lengths_ta.stack(), [1, 0])  # (B, T)
    return frames, lengths


class CompiledFunctions:
    """The model's compiled decoding functions, made on first use.

    One `tf.function` per (kind of stop criteria, function, XLA or not),
    each with an input signature whose batch (and time) dimensions are
    `None`, so batch size and stream length never cause a retrace.
    """

    def __init__(self, model):
        self._model = model
        self._functions = {}
        self._concrete = {}

    def step(self, criteria, jit_compile=False):
        """The compiled `outer_step` for these criteria kinds."""
        key = ("step", stopping.criteria_kind(criteria), bool(jit_compile))
        if key not in self._functions:
            # A partial (not a closure) keeps TensorFlow's "frequent
            # retracing" warning per model instead of per code object.
            self._functions[key] = tf.function(
                functools.partial(outer_step, self._model, criteria),
                input_signature=self._step_signature(len(criteria)),
                jit_compile=bool(jit_compile),
                reduce_retracing=True,
            )
        return self._functions[key]

    def step_concrete(self, criteria, jit_compile=False):
        """`step(criteria, jit_compile)` as its one concrete function.

        The signature already fixes every shape up to the batch size, so
        this is the same (single) trace; calling it directly skips the
        `tf.function` dispatch (argument binding and trace lookup), which
        costs more than the whole step of a small model.
        """
        key = ("concrete", stopping.criteria_kind(criteria), bool(jit_compile))
        if key not in self._concrete:
            self._concrete[key] = self.step(criteria, jit_compile).get_concrete_function()
        return self._concrete[key]

    def sequences(self, criteria):
        """The compiled `decode_sequences` for these criteria kinds."""
        key = ("sequences", stopping.criteria_kind(criteria))
        if key not in self._functions:
            model = self._model
            self._functions[key] = tf.function(
                functools.partial(decode_sequences, model, criteria),
                input_signature=(
                    tf.TensorSpec([None, None, model.input_size], tf.float32),
                    tf.TensorSpec([None, None], tf.int32),
                    tf.TensorSpec([len(criteria)], tf.float32),
                    tf.TensorSpec([], tf.int32),
                ),
            )
        return self._functions[key]

    def _step_signature(self, num_criteria):
        model = self._model
        return (
            tf.TensorSpec([None, model.input_size], tf.float32),
            [tf.TensorSpec([None, s], tf.float32) for s in model.outer_state_sizes],
            [tf.TensorSpec([None, s], tf.float32) for s in model.inner_state_sizes],
            tf.TensorSpec([None], tf.bool),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([num_criteria], tf.float32),
            tf.TensorSpec([], tf.int32),
        )

    def tracing_count(self):
        """Total number of traces over all compiled functions (for tests)."""
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())


def decode(model, x, stop=None, lengths=None, max_steps=None):
    """Implements `StreamGen.decode`; see its docstring."""
    x = check_inputs(model, x, "x", ndim=3)
    batch, steps = x.shape[:2]
    if lengths is None:
        criteria = resolve_stop(model, stop)
        stop_at = np.full((batch, steps), model.max_steps, np.int32)
    else:
        criteria = ()  # forced lengths ignore the stop criteria
        stop_at = check_lengths(model, lengths, (batch, steps))
    cap = resolve_cap(model, max_steps)
    thresholds = np.array([c.threshold for c in criteria], np.float32)
    frames, lengths = model._compiled.sequences(criteria)(
        tf.constant(x), tf.constant(stop_at), tf.constant(thresholds),
        tf.constant(cap, tf.int32),
    )
    flat = tf.RaggedTensor.from_tensor(  # (B*T, None, O)
        tf.reshape(frames, [-1, model.max_steps, model.output_size]),
        lengths=tf.reshape(lengths, [-1]),
    )
    return tf.RaggedTensor.from_uniform_row_length(flat, steps)  # (B, T, None, O)


def outer_update(model, x, outer_state, inner_state):
    """model_a's step, and where model_b starts for this `Out[i]`.

    Args:
        model: a `sg.StreamGen`.
        x: float tensor `(B, input_size)`.
        outer_state, inner_state: lists of float tensors `(B, size)`.

    Returns:
        `(outer_state, ir, start_state)`: model_a's new state (a list),
        `IR[i]` `(B, ir_size)`, and model_b's start state (a list): from
        `IR[i]` in `"reset"` mode, `inner_state` in `"carry"` mode.
    """
    outer_output, outer_state = model.outer_cell(x, list(outer_state))
    ir = model.project_ir(outer_output)  # (B, ir)
    if model.decoder_state == "reset":
        start_state = model.initial_inner_state(ir)
    else:
        start_state = list(inner_state)
    return _as_list(outer_state), ir, start_state


def resolve_stop(model, stop):
    """`stop=None` -> the model's criteria; else normalized."""
    return model.stop if stop is None else stopping.normalize_stop(stop)


def _as_list(state):
    return list(state) if isinstance(state, (list, tuple)) else [state]
