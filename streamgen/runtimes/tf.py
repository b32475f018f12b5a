"""Compiled decoding: one outer step, whole sequences, and `TFRuntime`.

`outer_step` is the whole per-input computation: model_a's step once
(`model.outer_update`), then model_b's inner loop (`model.inner_step`) with
its stop checks, a per-row `running` mask and an early exit once every row
has stopped. Frames are written into a fixed-size buffer
`(B, max_steps, output_size)` (no `TensorArray`), which keeps the function
convertible to LiteRT and compilable by XLA. Stop thresholds and caps are
per-row inputs, so rows with different settings share one call.
`unrolled_outer_step` computes the same with the inner steps unrolled and
the stop tests after them: the streaming step (`packed_step`) uses it up to
`UNROLL_MAX_STEPS` inner steps, on TensorFlow and in `.tflite` exports;
XLA steps and whole-sequence decoding (`outer_loop`) keep the loop.

`CompiledFunctions` wraps them in `tf.function`s with a fixed input
signature (batch dimension `None`). The step is compiled with the four
built-in kinds of stop criteria at once (`streamgen.criteria`: each row's
thresholds switch each kind on or off), so one trace serves any mix of
built-in criteria; only criterion classes that users write themselves are
baked in, one trace per tuple of their kinds. `TFRuntime` is the public,
stateless step over it (see `streamgen.runtimes.base`), which it runs as
one graph op (`GraphCall`).
"""

import contextlib
import functools
import threading
import weakref

import numpy as np

from streamgen import checks
from streamgen import mdn as mdn_lib
from streamgen import randomness
from streamgen import samplers
from streamgen.runtimes.base import RANDOM_COLUMNS, Runtime, row_seeds, state_uniforms
from streamgen import stopping
from streamgen import criteria as criteria_lib
from streamgen.quiet import import_tensorflow

tf = import_tensorflow()


def built_in_fires(frame, stop_logit, signed, divisors=None):
    """Whether any built-in stop criterion fires (`streamgen.criteria`).

    Args:
        frame: float tensor `(..., output_size)`.
        stop_logit: float tensor `(..., 1)`.
        signed: float tensor `(..., 3)` (broadcast against the others): the
            thresholds of `StopHead`, `L2Norm` above and `L2Norm` below,
            times `criteria_lib.SIGNS` (the last one negated); with
            `divisors`, `(..., 4)`: the `StopHead` threshold, the
            `StopSample` draw `u`, then the two `L2Norm` ones.
        divisors: optional float tensor `(..., 2)`, `[1, T]` with `T` the
            `StopSample` temperature (+inf where off): `sigmoid(stop_logit
            / divisors)` gives both `sigmoid(stop_logit)` (a division by 1
            is exact) and `sigmoid(logit / T)`, which fires when above `u`
            (`u < sigmoid(logit / T)`), in the same comparison (rows
            without it compare with 2.0).

    Returns:
        A bool tensor `(...)`: `sigmoid(stop_logit) > t0 or norm > t1 or
        norm < t2` (or `sigmoid(logit / T) > u`), as one comparison of
        `[sigmoid, norm, -norm]` (`[sigmoid, sigmoid, norm, -norm]`): eight
        ops in all (nine with `divisors`), which matters in the inner loop
        at batch 1.
    """
    # `tf.norm(frame, axis=-1)`'s ops (as `sg.L2Norm.fires`), without its
    # final squeeze: the same values.
    norm = tf.sqrt(tf.reduce_sum(frame * frame, axis=-1, keepdims=True))  # (..., 1)
    probability = tf.sigmoid(stop_logit if divisors is None else stop_logit / divisors)
    values = tf.concat([probability, norm, -norm], axis=-1)  # (..., 3) or (..., 4)
    return tf.reduce_any(values > signed, axis=-1)


def greedy_frame(model, head):
    """The greedy frame from the frame head's output `(B, H)` -> `(B, O)`:
    the head itself (`mse`, `mae`), the one-hot of the most likely class
    (`categorical`, as `sg.samplers.Greedy`), the mean of the most likely
    component (`mdn`)."""
    if model.frame_loss == "categorical":
        best = tf.argmax(head, axis=-1, output_type=tf.int32)  # (B,)
        return tf.cast(tf.equal(tf.range(model.output_size), tf.expand_dims(best, 1)),
                       tf.float32)
    return model.frame_from_head(head)


_TRACING = threading.local()  # .builtins: tracing for a LiteRT export


@contextlib.contextmanager
def litert_builtins():
    """Traces the step with LiteRT builtin ops only (the `.tflite` export):
    without it, the compiled TensorFlow step may use a TensorFlow op where
    LiteRT needs several builtins (the mdn scales' softplus)."""
    previous = getattr(_TRACING, "builtins", False)
    _TRACING.builtins = True
    try:
        yield
    finally:
        _TRACING.builtins = previous


def sampled_frame(model, head, params, u, plan=None, j=None):
    """The frame drawn from the head's output `(B, H)` with the sampler
    parameters `params` `(B, 4)` and the step's draws `u` `(B, draws)`
    (`sg.samplers`: column 1 the class / component, 2.. Box-Muller).

    With `plan` (`sampling_plan` of the whole step) and the inner step `j`
    (a Python int or an int32 scalar tensor), `u` is unused: the step's
    column is read from the plan, whose per-row parts were computed once.
    """
    if model.frame_loss not in samplers.SAMPLED_KINDS:
        return head  # mse / mae: only Greedy applies
    if plan is None:
        if model.frame_loss == "categorical":
            return samplers.sample_categorical(head, params, u[:, 1])
        logits, means, scales = model.split_mixture(head)
        return samplers.sample_mdn(logits, means, scales, params, u[:, 1], u[:, 2:])
    u_comp = tf.gather(plan.u_comp, j, axis=1)  # (B, 1)
    if model.frame_loss == "categorical":
        return samplers.sample_categorical(head, params, u_comp, plan=plan)
    # `samplers.sample_mdn` on the raw head: only the drawn component's
    # mean and scale are taken out of it (`mdn.component`; TensorFlow's
    # Softplus op outside a LiteRT export: 6 ops fewer per inner step).
    chosen = samplers.choose(head[:, :model.mixtures], plan, u_comp)  # (B,)
    mean, scale = mdn_lib.component(head, model.output_size, chosen,  # (B, D) each
                                    fused=not getattr(_TRACING, "builtins", False))
    return mean + scale * tf.gather(plan.noise, j, axis=1)  # greedy rows: noise 0


def sampling_plan(model, params, u_all):
    """`samplers.make_plan` of a step's draws `u_all` `(B, M, draws)`: what
    does not depend on the frame head (Box-Muller normals of every inner step,
    the greedy rows' choice columns zeroed), computed once, out of the
    inner loop. `None` for `mse` / `mae` frames (no frame is drawn)."""
    if model.frame_loss == "categorical":
        return samplers.make_plan(params, model.output_size, u_all[:, :, 1])
    if model.frame_loss == "mdn":
        return samplers.make_plan(params, model.mixtures, u_all[:, :, 1], u_all[:, :, 2:],
                                  model.output_size)
    return None


def next_position(cols):
    """The random columns `(B, 4)` (`randomness.encode`: seed halves, then
    position halves) with the position one further (exact float32 adds:
    the low half carries into the high one, which wraps at 2**16)."""
    cols = cols + tf.constant([0.0, 0.0, 0.0, 1.0])
    carry = tf.floor(cols[:, 3:] * (1.0 / 65536.0))  # (B, 1): 0 or 1
    cols = cols + carry * tf.constant([0.0, 0.0, 1.0, -65536.0])
    wrap = tf.floor(cols[:, 2:3] * (1.0 / 65536.0))  # (B, 1): 0 or 1
    return cols - wrap * tf.constant([0.0, 0.0, 65536.0, 0.0])


def outer_step(model, criteria, x, outer_state, inner_state, generate, stop_at,
               thresholds, cap, built_in=False, sampling=None):
    """One outer step: `x[i] -> Out[i]`, with explicit state in and out.

    Args:
        model: a `sg.StreamGen`.
        criteria: tuple of `sg.StopCriterion` (their kinds are baked in).
        x: float tensor `(B, input_size)`.
        outer_state: list of float tensors `(B, size)`, model_a's state.
        inner_state: list of float tensors `(B, size)`, model_b's state
            (used in `"carry"` mode).
        generate: bool tensor `(B,)`; rows where it is False skip model_b
            (`len(Out[i]) == 0`, inner state unchanged).
        stop_at: int32 tensor `(B,)`; forces the STOP token at inner step
            `stop_at` (the step runs but is not emitted). `max_steps` or more
            means "not forced"; `None` (at trace time) leaves it out of the
            graph.
        thresholds: float tensor `(B, len(criteria))`, each row's thresholds;
            with `built_in`, `(B, 3 + len(criteria))`: the built-in kinds'
            columns first (`streamgen.criteria`).
        cap: int32 tensor `(B,)` in `[0, max_steps]`: no inner step
            `j >= cap[b]` runs for row `b`.
        built_in: compile the built-in kinds too (see `streamgen.criteria`);
            `criteria` are then the runtime's own criterion classes.
        sampling: `None` (every row greedy, no `StopSample`: no draw is
            read), or `(params, uniforms)`: float tensors `(B, 4)`
            (`samplers.row_params`) and `(B, max_steps * draws_per_step)`
            (`randomness.uniforms` at the row's position), the step's
            random numbers as an input (needs `built_in`).

    Returns:
        `(frames, lengths, outer_state, inner_state)`: frames float
        `(B, max_steps, output_size)`, zero past each row's length; lengths
        int32 `(B,)`; the new states as lists.
    """
    M = model.max_steps
    batch = tf.shape(x)[0]
    outer_state, ir, start_state = model.outer_update(x, outer_state, inner_state)

    # Loop invariants, hoisted: the body is run up to M times per call, and
    # at batch 1 its cost is the number of ops in it, not their size.
    cap = tf.minimum(cap, M)  # (B,), the hard bound beside the stop condition
    last = tf.reduce_max(tf.concat([cap, [0]], 0))  # no row runs step j >= last
    first = criteria_lib.COUNT if built_in else 0  # column of criteria[0]
    limits = [thresholds[:, first + k] for k in range(len(criteria))]  # each (B,)
    if built_in:  # the compared built-in kinds' thresholds, signed: (B, 3)
        signed = thresholds[:, :criteria_lib.COMPARED] * tf.constant(criteria_lib.SIGNS)
    positions = tf.reshape(tf.range(M), [1, M, 1])  # (1, M, 1): slot indices
    if sampling is not None:
        params, uniforms = sampling
        draws = samplers.draws_per_step(model.frame_loss, model.output_size)
        u_all = tf.reshape(uniforms, [batch, M, draws])  # (B, M, draws)
        temperature = thresholds[:, criteria_lib.SAMPLE:criteria_lib.SAMPLE + 1]  # (B, 1)
        divisors = tf.concat([tf.ones_like(temperature), temperature], axis=1)  # (B, 2)
        # Rows without StopSample (+inf) compare with 2.0, which no
        # probability exceeds: the thresholds of each inner step, (B, M, 4),
        # in `built_in_fires`' order with `divisors`.
        u_stop = tf.where(temperature < np.inf, u_all[:, :, 0], 2.0)  # (B, M)
        signed = tf.broadcast_to(tf.expand_dims(signed, 1), [batch, M, 3])
        signed = tf.concat([signed[:, :, :1], tf.expand_dims(u_stop, 2), signed[:, :, 1:]],
                           axis=2)
        plan = sampling_plan(model, params, u_all)

    def cond(j, running, previous, state, frames, lengths):
        return (j < last) & tf.reduce_any(running)

    def body(j, running, previous, state, frames, lengths):
        # `running`: rows for which inner step j runs (not yet stopped, and
        # under their cap).
        running = running & (j < cap)
        if sampling is None:
            if model.frame_loss == "categorical":
                head, stop_logit, new_state = model.inner_head_step(ir, previous, list(state))
                frame = greedy_frame(model, head)
            else:  # the frame of `inner_step`, as before
                frame, stop_logit, new_state = model.inner_step(ir, previous, list(state))
        else:
            head, stop_logit, new_state = model.inner_head_step(ir, previous, list(state))
            frame = sampled_frame(model, head, params, None, plan, j)
        if sampling is not None:  # with StopSample: u < sigmoid(logit / T)
            stops = [built_in_fires(frame, stop_logit, tf.gather(signed, j, axis=1),
                                    divisors)]  # (B,)
        else:
            stops = [built_in_fires(frame, stop_logit, signed)] if built_in else []
        if criteria:
            stop_logit = stop_logit[:, 0]  # (B,)
            stops += [criterion.fires(frame, stop_logit, limit)  # each (B,)
                      for criterion, limit in zip(criteria, limits)]
        if stop_at is not None:
            stops.append(j == stop_at)  # the forced STOP
        emit = running  # rows for which step j is a frame: no STOP fired
        if stops:
            emit = running & ~functools.reduce(tf.logical_or, stops)
        lengths = tf.where(emit, j + 1, lengths)
        # `expand_dims`, not `[:, None]`, which costs two LiteRT ops.
        emitted = tf.where(tf.expand_dims(emit, 1), frame, 0.0)  # (B, O)
        # Slot j of the buffer: a broadcast multiply-add with a one-hot
        # `slot`, cheaper than a broadcast select on large batches (and
        # linear in M, where a gather from an identity matrix is not).
        slot = tf.cast(tf.equal(positions, j), tf.float32)  # (1, M, 1)
        frames += slot * tf.expand_dims(emitted, 1)  # (B, M, O)
        rows = tf.expand_dims(running, 1)  # (B, 1)
        state = [tf.where(rows, new, old) for new, old in zip(new_state, state)]
        # A stopped row never runs again, so its `previous` is never read.
        return j + 1, emit, frame, state, frames, lengths

    loop_vars = (
        tf.constant(0),
        tf.cast(generate, tf.bool),  # rows that generate nothing end at once
        tf.zeros([batch, model.output_size]),  # previous frame, zeros at j = 0
        start_state,
        tf.zeros([batch, M, model.output_size]),
        tf.zeros([batch], tf.int32),
    )
    _, _, _, end_state, frames, lengths = tf.while_loop(cond, body, loop_vars)
    if model.decoder_state == "reset":
        # Rows that generate nothing keep their previous inner state too.
        generating = tf.expand_dims(tf.cast(generate, tf.bool), 1)  # (B, 1)
        end_state = [tf.where(generating, new, old) for new, old in zip(end_state, inner_state)]
    return frames, lengths, outer_state, end_state


# Up to this many inner steps (`model.max_steps`), the streaming step runs
# them unrolled (`unrolled_outer_step`), on TensorFlow (but for XLA) and in
# a `.tflite` export alike; above it, in `outer_step`'s `tf.while_loop`.
UNROLL_MAX_STEPS = 16


def unrolls(model):
    """Whether the streaming step of `model` runs its inner steps unrolled."""
    return model.max_steps <= UNROLL_MAX_STEPS


def unrolled_outer_step(model, criteria, x, outer_state, inner_state, generate,
                        thresholds, cap, params=None, uniforms=None):
    """`outer_step` with the inner steps unrolled and unmasked.

    Same arguments as `packed_step`'s `outer_step` (without `stop_at`; the
    built-in kinds always in, `criteria` the user's own classes; `params`
    and `uniforms` `None` for the greedy step: greedy frames, no
    `StopSample`), same results: `(frames, lengths, outer_state,
    inner_state)`. Every row runs all `max_steps` inner steps,
    whether it has stopped or not; nothing a stopped row computes reaches
    the results (it is only ever *selected* away, so even a NaN in it
    cannot leak). Per row, with `first` the first inner step where a
    criterion fires (`max_steps` if none):

    - `lengths = min(first, cap)`, 0 where `generate` is False;
    - the frames of steps `j < lengths` are emitted, the rest are zeros;
    - the carried inner state is the one after the last step that ran (the
      STOP step included): after step `min(first, cap - 1)`, which is
      index `min(first + 1, cap)` in `[start, after step 0, ...]`; the start
      state where nothing ran (`generate` False, or `cap` 0).

    That is what the masked `tf.while_loop` of `outer_step` computes; here
    the inner steps form one chain of ops without selects, comparisons or
    control flow, and the stop tests of all steps are one call per
    criterion, after it. The graph has no loop, so TensorFlow runs it
    straight through on the calling thread (`GraphCall`), and LiteRT's
    XNNPACK delegate takes the chain as one partition; the price is that
    every inner step runs even when every row has stopped, which is why
    only models up to `UNROLL_MAX_STEPS` get it (`benchmarks/README.md`).
    """
    M = model.max_steps
    outer_state, ir, state = model.outer_update(x, outer_state, inner_state)
    count = criteria_lib.COUNT  # the built-in kinds' columns come first
    limits = [thresholds[:, count + k] for k in range(len(criteria))]  # each (B,)
    if uniforms is None:  # the greedy step
        u_all = plan = None
    else:
        draws = samplers.draws_per_step(model.frame_loss, model.output_size)
        u_all = tf.reshape(uniforms, [-1, M, draws])  # (B, M, draws)
        plan = sampling_plan(model, params, u_all)  # hoisted out of the chain

    history = [[s] for s in state]  # per state tensor: start, after step 0, ...
    frames, stop_logits = [], []  # each (B, O), (B, 1)
    previous = None  # the previous frame is zeros at step 0
    for j in range(M):
        if model.frame_loss in ("mse", "mae"):  # only Greedy applies: the head's frame
            previous, stop_logit, state = model.inner_step(ir, previous, state)
        elif u_all is None:  # the greedy step (`runtimes.tf.outer_step`'s greedy frames)
            head, stop_logit, state = model.inner_head_step(ir, previous, state)
            previous = greedy_frame(model, head)
        else:
            head, stop_logit, state = model.inner_head_step(ir, previous, state)
            previous = sampled_frame(model, head, params, None, plan, j)
        for past, now in zip(history, state):
            past.append(now)
        frames.append(previous)  # (B, O)
        stop_logits.append(stop_logit)  # (B, 1)

    frames = tf.stack(frames, axis=1)  # (B, M, O)
    stop_logits = tf.concat(stop_logits, axis=1)  # (B, M)
    # The stop tests of all steps at once, off the chain: `(B, M)` each.
    fired = all_steps_built_in_fires(frames, stop_logits, thresholds,
                                     None if u_all is None else u_all[:, :, 0])
    if criteria:
        fired += [all_steps_fire(criterion, frames, stop_logits, limit)
                  for criterion, limit in zip(criteria, limits)]
    # (Not `clip_by_value(cap, 0, M)`: the converter turns an int32 clip to
    # [0, 6] into a RELU6 that LiteRT lacks.)
    cap = tf.minimum(cap, M)
    steps = tf.range(M)  # (M,)
    generate = tf.cast(generate, tf.bool)
    ran = generate & (cap > 0)  # rows that ran at least one inner step
    # the first step where a criterion fires, M if none: (B,)
    stops = functools.reduce(tf.logical_or, fired)
    first = tf.reduce_min(tf.where(stops, steps, M), axis=1)
    lengths = tf.where(ran, tf.minimum(first, cap), 0)  # (B,)
    last = tf.where(ran, tf.minimum(first + 1, cap), 0)  # index into history
    end_state = [tf.gather(tf.stack(past, axis=1), last, batch_dims=1) for past in history]
    if model.decoder_state == "reset":
        # Rows that generate nothing keep their previous inner state.
        generating = tf.expand_dims(generate, 1)  # (B, 1)
        end_state = [tf.where(generating, new, old) for new, old in zip(end_state, inner_state)]
    emitted = tf.reshape(steps, [1, M, 1]) < tf.reshape(lengths, [-1, 1, 1])  # (B, M, 1)
    frames = tf.where(emitted, frames, 0.0)  # (B, M, O)
    return frames, lengths, outer_state, end_state


def all_steps_built_in_fires(frames, stop_logits, thresholds, u):
    """Where each built-in kind fires, for every inner step at once.

    `runtimes.tf.built_in_fires`'s tests (`streamgen.criteria`'s table) on
    `(B, M)` values, each kind compared on its own with its `(B, 1)`
    threshold column: `sigmoid(logit) > t0`, `norm > t1`, `norm < t2`,
    `u < sigmoid(logit / t3)` (rows without `StopSample` compare `u` = 2.0).
    The same decisions as one comparison of the concatenated `[sigmoid, norm,
    -norm]` against signed thresholds, but LiteRT runs that concatenation,
    the broadcast comparison and the `any` reduction in slow reference
    kernels: at 256 rows the export's step took ~35 us (~3.5%) longer. In
    a LiteRT export (`litert_builtins`) the squared norm is one matrix
    product with a column of ones (XNNPACK's fully connected kernel)
    instead of a `SUM` reduction; in TensorFlow it is `built_in_fires`'
    reduction, the same values as the `tf.while_loop` step.

    Args:
        frames: `(B, M, O)`; stop_logits: `(B, M)`; thresholds: `(B, 4 + C)`;
        u: `(B, M)`, each step's `StopSample` draw; `None` in the greedy
            step, which has no `StopSample` test (~1 us of a call at batch 1).

    Returns:
        A list of bool `(B, M)` tensors.
    """
    column = lambda k: thresholds[:, k:k + 1]  # noqa: E731  (B, 1)
    if getattr(_TRACING, "builtins", False):
        squares = tf.squeeze(tf.matmul(frames * frames, tf.ones([frames.shape[2], 1])), -1)
    else:
        squares = tf.reduce_sum(frames * frames, axis=-1)
    norm = tf.sqrt(squares)  # (B, M)
    fired = [tf.sigmoid(stop_logits) > column(0), norm > column(1), norm < column(2)]
    if u is None:
        return fired
    temperature = column(criteria_lib.SAMPLE)  # +inf: off
    u = tf.where(temperature < np.inf, u, 2.0)
    return fired + [u < tf.sigmoid(stop_logits / temperature)]


def all_steps_fire(criterion, frames, stop_logits, threshold):
    """`criterion.fires` for every inner step at once: `(B, M)` bool.

    Args:
        frames: `(B, M, O)`; stop_logits: `(B, M)`.

    A criterion decides row by row (`fires` maps `(N, O)` frames and `(N,)`
    logits to `(N,)`), so the `B * M` (row, step) pairs go through one call
    as `N` rows. `sg.StopHead` is computed directly on `(B, M)` (the same
    `sigmoid(logit) > threshold`), which spares the two reshapes.
    """
    if type(criterion) is stopping.StopHead:
        return tf.sigmoid(stop_logits) > tf.expand_dims(threshold, 1)
    steps = stop_logits.shape[1]
    fired = criterion.fires(tf.reshape(frames, [-1, frames.shape[2]]),
                            tf.reshape(stop_logits, [-1]),
                            tf.repeat(threshold, steps))  # row-major (B * M,)
    return tf.reshape(fired, [-1, steps])


def outer_loop(model, criteria, x, stop_at, thresholds, cap):
    """Runs `outer_step` over `T` steps inside the graph, from zero state.

    Args:
        x: float tensor `(B, T, input_size)`.
        stop_at: int32 tensor `(B, T)`, as in `outer_step`.
        thresholds: float tensor `(len(criteria),)`, for every row.
        cap: int32 scalar tensor, for every row.

    Returns:
        `(frames (B, T, max_steps, output_size), lengths (B, T))`.
    """
    batch, steps = tf.shape(x)[0], tf.shape(x)[1]
    state = model.get_initial_state(1)
    outer_state = [tf.zeros([batch, s.shape[1]]) for s in state["outer"]]
    inner_state = [tf.zeros([batch, s.shape[1]]) for s in state["inner"]]
    generate = tf.ones([batch], tf.bool)
    thresholds = tf.broadcast_to(thresholds, [batch, len(criteria)])  # (B, K)
    cap = tf.fill([batch], cap)  # (B,)
    x_time_major = tf.transpose(x, [1, 0, 2])  # (T, B, I)
    stop_at_time_major = tf.transpose(stop_at, [1, 0])  # (T, B)

    def body(t, outer_state, inner_state, frames_ta, lengths_ta):
        frames, lengths, outer_state, inner_state = outer_step(
            model, criteria, x_time_major[t], outer_state, inner_state,
            generate, stop_at_time_major[t], thresholds, cap,
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


_COMPILED = weakref.WeakKeyDictionary()  # model -> its CompiledFunctions


def compiled_functions(model):
    """The `CompiledFunctions` of `model`, made on first use and kept while
    the model lives (this module owns them; the model holds no reference)."""
    functions = _COMPILED.get(model)
    if functions is None:
        functions = _COMPILED[model] = CompiledFunctions(model)
    return functions


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

    def step(self, criteria, jit_compile=False, sampling=False):
        """The compiled `packed_step` with the built-in kinds and these
        criteria of the user's own classes (usually none); with
        `sampling`, `sampling_step` (two more inputs: the sampler
        parameters and the uniforms)."""
        key = ("step", stopping.criteria_kind(criteria), bool(jit_compile), bool(sampling))
        if key not in self._functions:
            # A closure, not a `functools.partial`: the concrete function
            # of a partial was measured 2.5-3x slower to call at batch 1
            # (the same graph; benchmarks/README.md, sampling).
            model, step = self._model, sampling_step if sampling else packed_step
            # XLA compiles the loop itself, and at large batches (decoding:
            # thousands of rows) its early exit saves more than unrolling.
            unrolled = unrolls(model) and not jit_compile

            def function(*inputs):
                return step(model, criteria, *inputs, unrolled=unrolled)

            self._functions[key] = tf.function(
                function,
                input_signature=step_signature(self._model, criteria_lib.COUNT + len(criteria),
                                               sampling),
                jit_compile=bool(jit_compile),
                reduce_retracing=True,
            )
        return self._functions[key]

    def step_concrete(self, criteria, jit_compile=False, sampling=False):
        """`step(criteria, jit_compile, sampling)` as its one concrete function.

        The signature already fixes every shape up to the batch size, so
        this is the same (single) trace; calling it directly skips the
        `tf.function` dispatch (argument binding and trace lookup), which
        costs more than the whole step of a small model.
        """
        key = ("concrete", stopping.criteria_kind(criteria), bool(jit_compile), bool(sampling))
        if key not in self._concrete:
            self._concrete[key] = self.step(criteria, jit_compile, sampling).get_concrete_function()
        return self._concrete[key]

    def step_call(self, criteria, jit_compile=False, sampling=False):
        """`step_concrete(criteria, jit_compile, sampling)` as the callable
        `TFRuntime` steps with: `(x, state, generate, thresholds, caps[,
        params, uniforms]) -> [frames, lengths, state]`, tensors in and out.

        Without XLA, a `GraphCall` of the concrete function; with XLA, the
        concrete function itself (run as a plain op, an XLA function would
        run without XLA).
        """
        key = ("call", stopping.criteria_kind(criteria), bool(jit_compile), bool(sampling))
        if key not in self._concrete:
            concrete = self.step_concrete(criteria, jit_compile, sampling)
            self._concrete[key] = concrete if jit_compile else GraphCall(concrete)
        return self._concrete[key]

    def sequences(self, criteria):
        """The compiled `outer_loop` for these criteria kinds."""
        key = ("sequences", stopping.criteria_kind(criteria))
        if key not in self._functions:
            model = self._model
            self._functions[key] = tf.function(
                functools.partial(outer_loop, model, criteria),
                input_signature=(
                    tf.TensorSpec([None, None, model.input_size], tf.float32),
                    tf.TensorSpec([None, None], tf.int32),
                    tf.TensorSpec([len(criteria)], tf.float32),
                    tf.TensorSpec([], tf.int32),
                ),
            )
        return self._functions[key]

    def tracing_count(self):
        """Total number of traces over all compiled functions (for tests)."""
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())


class GraphCall:
    """Runs a concrete function's graph as one `StatefulPartitionedCall` op.

    Calling a concrete function (`tf.function(...).get_concrete_function()`)
    binds its arguments against the signature in Python and then runs the
    graph through the eager runtime's function path, which on 2 cores cost
    ~180 us per call of a function that only returns its inputs, against
    ~13 us for the same function run as a `tf.raw_ops.StatefulPartitionedCall`
    op (the op a graph uses to call another). On the unrolled streaming
    step (no control flow) the op also runs every kernel on the calling
    thread: at batch 1 the default model's step took ~300 us instead of
    ~610 us (CPU time ~300 us instead of ~830 us), with the same outputs,
    bit for bit (benchmarks/README.md, "The TensorFlow step's call").

    Positional tensors only, of the signature's dtypes and shapes (the
    caller checks them: nothing is converted or bound here); the function's
    outputs must be a flat tuple of tensors. No gradient is recorded. The
    captured inputs (the model's variables) are taken at each call, as the
    concrete function itself does, so later weight updates are seen.

    Args:
        concrete: a concrete function, not XLA-compiled (as an op, an XLA
            function runs without XLA).
    """

    def __init__(self, concrete):
        self.concrete = concrete
        self._output_dtypes = [output.dtype for output in concrete.outputs]

    def __call__(self, *inputs):
        """`inputs` tensors -> the function's outputs, a list of tensors."""
        return tf.raw_ops.StatefulPartitionedCall(
            args=list(inputs) + list(self.concrete.captured_inputs),
            Tout=self._output_dtypes, f=self.concrete)


# The step's inputs, in order (a `.tflite` export's input names too:
# `streamgen.runtimes.lite.INPUT_NAMES`).
STEP_INPUTS = ("x", "state", "generate", "thresholds", "caps", "params", "uniforms")


def step_signature(model, num_criteria, sampling=False):
    """The input signature of the compiled step (and of a `.tflite` export).

    Args:
        model: a `sg.StreamGen`.
        num_criteria: the thresholds' columns (`criteria.COUNT` + the
            user's own criteria).
        sampling: with the sampler parameters and the uniforms.

    Returns:
        A tuple of named `tf.TensorSpec`s, batch dimension `None`:
        `x (B, input_size)`, `state (B, S + 4)`, `generate (B,)` bool,
        `thresholds (B, num_criteria)`, `caps (B,)` int32, and with
        `sampling` `params (B, 4)` and `uniforms (B, max_steps *
        draws_per_step)`.
    """
    width = sum(model.outer_state_sizes) + sum(model.inner_state_sizes) + RANDOM_COLUMNS
    draws = samplers.draws_per_step(model.frame_loss, model.output_size)
    shapes = ([model.input_size], [width], [], [num_criteria], [],
              [samplers.PARAMS], [model.max_steps * draws])
    dtypes = (tf.float32, tf.float32, tf.bool, tf.float32, tf.int32, tf.float32, tf.float32)
    specs = tuple(tf.TensorSpec([None] + shape, dtype, name=name)
                  for shape, dtype, name in zip(shapes, dtypes, STEP_INPUTS))
    return specs if sampling else specs[:5]


def decode(model, x, stop=None, lengths=None, max_steps=None, sampler=None, seed=None):
    """Implements `StreamGen.decode`; see its docstring."""
    x = checks.check_inputs(model, x, "x", ndim=3)
    batch, steps = x.shape[:2]
    sampler = samplers.check_applies(sampler, model.frame_loss)
    if lengths is not None:
        lengths = checks.check_lengths(model, lengths, (batch, steps))
    criteria = stopping.resolve_stop(model.stop, stop)
    if not sampler.greedy or (lengths is None and any(
            isinstance(c, stopping.StopSample) for c in criteria)):
        return _decode_stepped(model, x, stop, lengths, max_steps, sampler, seed)
    cap = checks.resolve_cap(model.max_steps, max_steps)
    frames, lengths = sequences_graph(model, criteria, x, lengths, cap)
    flat = tf.RaggedTensor.from_tensor(  # (B*T, None, O)
        tf.reshape(frames, [-1, model.max_steps, model.output_size]),
        lengths=tf.reshape(lengths, [-1]),
    )
    return tf.RaggedTensor.from_uniform_row_length(flat, steps, nrows=batch)  # (B, T, None, O)


def sequences_graph(model, criteria, x, forced, cap):
    """The whole outer loop of `B` sequences in one graph call, from zero state.

    Args:
        model: a `sg.StreamGen`.
        criteria: `sg.StopCriterion` objects (ignored with `forced`).
        x: float32 array `(B, T, input_size)`.
        forced: `None`, or int32 `(B, T)`: forced lengths.
        cap: int, the cap (the model's with `forced`).

    Returns:
        `(frames, lengths)` tensors: `(B, T, max_steps, output_size)`, `(B, T)`.
    """
    batch, steps = x.shape[:2]
    if batch == 0 or steps == 0:  # nothing to run
        return (tf.zeros([batch, steps, model.max_steps, model.output_size]),
                tf.zeros([batch, steps], tf.int32))
    if forced is None:
        stop_at = np.full((batch, steps), model.max_steps, np.int32)
    else:  # forced lengths ignore the stop criteria
        criteria, stop_at, cap = (), forced, model.max_steps
    thresholds = np.array([c.threshold for c in criteria], np.float32).reshape([len(criteria)])
    return compiled_functions(model).sequences(tuple(criteria))(
        tf.constant(x), tf.constant(stop_at), tf.constant(thresholds),
        tf.constant(cap, tf.int32))


def _decode_stepped(model, x, stop, lengths, max_steps, sampler, seed):
    """`decode` that samples: the compiled step over the `T` inputs
    (`Runtime.run_sequences`), row `b` a stream of seed
    `row_seeds(seed, B)[b]`."""
    batch, steps = x.shape[:2]
    runtime = TFRuntime(model, stop=stop, max_steps=max_steps, sampler=sampler)
    seeds = row_seeds(randomness.new_seed() if seed is None else seed, batch)
    frames, lengths = runtime.run_sequences(x, np.full(batch, steps, np.int64), lengths, seeds)
    flat = tf.RaggedTensor.from_tensor(
        tf.reshape(frames, [-1, model.max_steps, model.output_size]),
        lengths=tf.reshape(lengths, [-1]))
    return tf.RaggedTensor.from_uniform_row_length(flat, steps, nrows=batch)


def split_state(model, packed):
    """A packed state `(B, S + 4)` -> `(outer_state, inner_state, random)`:
    lists of `(B, size)`, and the random columns `(B, 4)` (the row's seed
    and position, `randomness.encode`)."""
    sizes = list(model.outer_state_sizes) + list(model.inner_state_sizes) + [RANDOM_COLUMNS]
    parts = tf.split(packed, sizes, axis=1)
    count = len(model.outer_state_sizes)
    return parts[:count], parts[count:-1], parts[-1]


def packed_step(model, criteria, x, state, generate, thresholds, cap, sampling=None,
                unrolled=False):
    """One streaming step on a packed state `(B, S + 4)`, with the built-in
    stop kinds (`thresholds` `(B, 4 + len(criteria))`; `criteria`: the
    user's own classes) and without forced lengths (streaming never forces
    them); returns `(frames, lengths, state)`, the state's position one
    further. Every row greedy and no `StopSample` (`sampling_step` for
    the others).

    `unrolled`: the inner steps unrolled (`unrolled_outer_step`; callers
    decide with `unrolls(model)`) or in a `tf.while_loop` (`outer_step`),
    the same results.
    """
    outer_state, inner_state, random = split_state(model, state)
    if unrolled:
        params, uniforms = (None, None) if sampling is None else sampling
        frames, lengths, outer_state, inner_state = unrolled_outer_step(
            model, criteria, x, outer_state, inner_state, generate, thresholds, cap,
            params, uniforms)
    else:
        frames, lengths, outer_state, inner_state = outer_step(
            model, criteria, x, outer_state, inner_state, generate, None, thresholds, cap,
            built_in=True, sampling=sampling)
    state = tf.concat(list(outer_state) + list(inner_state) + [next_position(random)], axis=1)
    return frames, lengths, state


def sampling_step(model, criteria, x, state, generate, thresholds, cap, params, uniforms,
                  unrolled=False):
    """`packed_step` with the sampler parameters `(B, 4)` and the uniforms
    `(B, max_steps * draws_per_step)` of each row (its draws at its
    position): any mix of samplers and `StopSample` in one trace."""
    return packed_step(model, criteria, x, state, generate, thresholds, cap,
                       sampling=(params, uniforms), unrolled=unrolled)


class TFRuntime(Runtime):
    """The compiled TensorFlow step of a `sg.StreamGen` as a `sg.Runtime`.

    Stateless: `step(x, state)` for any rows, with per-row thresholds and
    caps (see `streamgen.runtimes.base.Runtime.step`). Runs the model's one
    concrete function of the step, compiled with every built-in stop kind
    (no retracing for a new batch size or another mix of built-in
    criteria), as one graph op (`GraphCall`; XLA steps are called as
    concrete functions).

    Args:
        model: a `sg.StreamGen`.
        stop: stop criteria, the default of each row; `None` uses the
            model's. Criteria of the user's own classes are baked in (each
            tuple of their kinds compiles its own graph, once per model).
        max_steps: optional int in `[1, model.max_steps]`, the default cap.
        jit_compile: compile the step with XLA.

    Example:

    >>> runtime = sg.open_runtime(model)
    >>> state = runtime.initial_state(4)                   # (4, S)
    >>> frames, lengths, state = runtime.step(np.zeros((4, 3)), state)
    """

    kind_hint = "Open another runtime (sg.open_runtime(model, stop=...)) for other kinds."

    def __init__(self, model, stop=None, max_steps=None, jit_compile=False, sampler=None):
        self.model = model
        self.stop = stopping.resolve_stop(model.stop, stop)  # StopCriterion objects
        self.criteria = [criteria_lib.criterion_dict(c) for c in self.stop]
        self.custom_criteria = criteria_lib.custom_of(self.criteria)
        self._custom = tuple(c for c, d in zip(self.stop, self.criteria)
                             if not criteria_lib.is_built_in(d))  # the user's classes
        self.input_size = model.input_size
        self.output_size = model.output_size
        self.frame_loss = model.frame_loss
        self.sampler = samplers.check_applies(sampler, model.frame_loss)
        self.params = np.asarray(self.sampler.params(), np.float32)
        self.trained_max_steps = model.max_steps
        self.max_steps = checks.resolve_cap(model.max_steps, max_steps)
        self.decoder_state = model.decoder_state
        self.state_sizes = {"outer": list(model.outer_state_sizes),
                            "inner": list(model.inner_state_sizes)}
        self.thresholds = criteria_lib.thresholds_row(self.criteria, self.custom_criteria)
        self.jit_compile = bool(jit_compile)
        self._step = compiled_functions(model).step_call(self._custom, jit_compile)
        self._sampling = None  # the sampling step, compiled on first use
        self._samples = self.samples()  # whether the defaults read draws
        self._defaults = {}  # rows -> the default per-row inputs, as tensors
        self._fingerprint = None

    def run_sequences(self, x, steps, lengths=None, seeds=None):
        """See `Runtime.run_sequences`: the whole outer loop in one graph call;
        with `jit_compile`, the XLA step over time with one batch shape;
        when the rows sample, stepped (their draws come from their seeds)."""
        if lengths is None and self.jit_compile:
            return _fixed_sequences(self, x, steps, seeds)
        if self.samples() if lengths is None else not self.sampler.greedy:
            return super().run_sequences(x, steps, lengths, seeds)  # stepped, with draws
        frames, lengths = sequences_graph(self.model, self.stop, x, lengths, self.max_steps)
        return frames.numpy(), lengths.numpy()

    def with_options(self, stop=None, max_steps=None, sampler=None):
        """See `Runtime.with_options`: the compiled steps are shared."""
        return TFRuntime(self.model, stop=self.stop if stop is None else stop,
                         max_steps=self.max_steps if max_steps is None else max_steps,
                         jit_compile=self.jit_compile,
                         sampler=self.sampler if sampler is None else sampler)

    def describe(self):
        """See `Runtime.describe`: with the model's own facts (`StreamGen.describe`)."""
        facts = self.model.describe()
        facts.pop("stop")  # this runtime's criteria, below
        return {**super().describe(), **facts}

    @property
    def fingerprint(self):
        if self._fingerprint is None:  # hashing the weights costs a little
            self._fingerprint = self.model.fingerprint()
        return self._fingerprint

    def run(self, x, state, generate=None, thresholds=None, caps=None, params=None,
            samples=None):
        frames, lengths, state = self._call(x, state, generate, thresholds, caps, params,
                                            samples)
        return frames, lengths, state.numpy()

    def advance(self, x, state, generate=None):
        # `Stream`'s hot path: the state stays a tensor between steps (a
        # numpy round trip costs more than a small model's step).
        return self._call(x, state, generate, None, None, None)

    def _call(self, x, state, generate, thresholds, caps, params, samples=None):
        """One call of a concrete function; `None` inputs are the defaults,
        tensors made once per batch size. Returns numpy frames and lengths
        and the state as a tensor."""
        rows = x.shape[0]
        defaults = self._defaults.get(rows) or self._run_defaults(rows)
        if samples is None:
            samples = (self._samples if thresholds is None and params is None
                       else self.samples(thresholds, params))
        inputs = (
            tf.constant(x),
            tf.constant(state) if isinstance(state, np.ndarray) else state,
            defaults[0] if generate is None else tf.constant(generate),
            defaults[1] if thresholds is None else tf.constant(thresholds),
            defaults[2] if caps is None else tf.constant(caps),
        )
        if not samples:  # every row greedy, no StopSample: no draw read
            frames, lengths, state = self._step(*inputs)
            return frames.numpy(), lengths.numpy(), state
        if self._sampling is None:
            self._sampling = compiled_functions(self.model).step_call(
                self._custom, self.jit_compile, sampling=True)
        u = state_uniforms(state, self.trained_max_steps, self.draws_per_step)
        frames, lengths, state = self._sampling(
            *inputs, defaults[3] if params is None else tf.constant(params), tf.constant(u))
        return frames.numpy(), lengths.numpy(), state

    def _run_defaults(self, rows):
        """The default per-row inputs for `rows` rows, as tensors (cached)."""
        if len(self._defaults) > 64:  # many batch sizes (a server)
            self._defaults.clear()
        defaults = self._defaults[rows] = (
            tf.ones([rows], tf.bool),
            tf.constant(np.broadcast_to(self.thresholds, (rows, len(self.thresholds)))),
            tf.fill([rows], tf.constant(self.max_steps, tf.int32)),
            tf.constant(np.broadcast_to(self.params, (rows, samplers.PARAMS))),
        )
        return defaults


def _fixed_sequences(runtime, x, steps, seeds=None):
    """Steps an XLA-compiled runtime over time with one batch shape.

    XLA compiles once per shape, so the rows are padded up to a power of
    two and rows that have ended stay in the batch with `generate=False`
    (model_b skipped; their outputs are dropped).
    """
    batch, time_steps = x.shape[:2]
    rows = 1 << max(batch - 1, 0).bit_length()  # the next power of two
    padded = np.zeros((rows, time_steps, x.shape[2]), np.float32)
    padded[:batch] = x
    live = np.zeros(rows, np.int64)
    live[:batch] = steps
    frames = np.zeros((batch, time_steps, runtime.trained_max_steps, runtime.output_size),
                      np.float32)
    lengths = np.zeros((batch, time_steps), np.int32)
    seeds = np.zeros(batch, np.int64) if seeds is None else np.asarray(seeds, np.int64)
    state = runtime.initial_state(rows, seeds=np.concatenate(
        [seeds, np.zeros(rows - batch, np.int64)]))
    for t in range(int(steps.max()) if batch else 0):
        f, n, state = runtime.run(padded[:, t], state, generate=live > t)
        frames[:, t] = f[:batch]
        lengths[:, t] = n[:batch]
    return frames, lengths
