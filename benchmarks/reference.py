"""The baselines streamgen is measured against, on a model's own weights.

- `NaiveStream`: decoding the way one writes it first: eager Keras layers
  called from Python, one call per inner step, the stop decision read back
  into Python (`float(p) > threshold`) at every inner step.
- `nested_loop_forward`: the teacher-forced training pass the way the
  original answer built it (see docs/design.md): eager, a `tf.while_loop` over
  outer steps with a nested `tf.while_loop` over inner steps, outputs
  collected in `tf.TensorArray`s, padded and time-major, the inner lengths
  given ahead of time.

Both compute exactly what `sg.StreamGen` computes (tests of the benchmark
itself are the `checks` printed by `run.py`), only slower.
"""

import numpy as np

from streamgen.quiet import import_tensorflow

tf = import_tensorflow()


class NaiveStream:
    """Batch-1 streaming with eager Keras calls per inner step.

    Args:
        model: a `sg.StreamGen` (its cells and heads are called directly).
        threshold: the `StopHead` threshold (`p > threshold` stops).
    """

    def __init__(self, model, threshold):
        self.model = model
        self.threshold = threshold
        self.outer = [tf.zeros((1, s)) for s in model.outer_state_sizes]
        self.inner = [tf.zeros((1, s)) for s in model.inner_state_sizes]

    def step(self, x):
        """`x (input_size,) -> Out[i] (L, output_size)`."""
        model = self.model
        output, outer = model.outer_cell(tf.constant(x[None], tf.float32), self.outer)
        self.outer = list(outer) if isinstance(outer, (list, tuple)) else [outer]
        ir = model.project_ir(output)
        state = model.initial_inner_state(ir) if model.decoder_state == "reset" else self.inner
        previous = tf.zeros((1, model.output_size))
        frames = []
        for _ in range(model.max_steps):
            output, state = model.inner_cell(tf.concat([ir, previous], -1), state)
            state = list(state) if isinstance(state, (list, tuple)) else [state]
            frame, stop_logit = model.inner_heads(output)
            if float(tf.sigmoid(stop_logit)[0]) > self.threshold:
                break  # the STOP token: not emitted
            frames.append(frame[0].numpy())
            previous = frame
        self.inner = state
        return np.array(frames, np.float32).reshape(-1, model.output_size)


def nested_loop_forward(model, x, frames, lengths):
    """Teacher-forced pass with nested `tf.while_loop`s and `TensorArray`s.

    Run eagerly (as in the original answer): every loop iteration is Python.
    `"reset"` decoder mode.

    Args:
        model: a `sg.StreamGen`.
        x: float tensor `(B, T, input_size)`.
        frames: float tensor `(B, T, M, O)`, the true frames (teacher
            forcing feeds frame `j - 1` at inner step `j`).
        lengths: int array `(B, T)`: outer step `t` runs
            `max_b(lengths[b, t]) + 1` inner steps (capped at `M`), given
            ahead of time like the original's `steps_at_t`.

    Returns:
        `{"frames": (B, T, M, O), "stop_logits": (B, T, M)}`, zero where no
        inner step ran (outside every loss mask).
    """
    batch, steps = x.shape[0], x.shape[1]
    M, O = model.max_steps, model.output_size
    steps_at_t = np.minimum(np.max(lengths, axis=0) + 1, M)  # (T,)
    x_time_major = tf.transpose(x, [1, 0, 2])  # (T, B, I)
    frames_time_major = tf.transpose(frames, [1, 2, 0, 3])  # (T, M, B, O)

    def outer_body(t, outer_state, frames_ta, logits_ta):
        output, outer_state = model.outer_cell(x_time_major[t], outer_state)
        outer_state = list(outer_state) if isinstance(outer_state, (list, tuple)) else [outer_state]
        ir = model.project_ir(output)  # (B, ir)
        inner_steps = int(steps_at_t[int(t)])

        def inner_body(j, previous, state, step_frames, step_logits):
            output, state = model.inner_cell(tf.concat([ir, previous], -1), state)
            state = list(state) if isinstance(state, (list, tuple)) else [state]
            frame, logit = model.inner_heads(output)
            return (j + 1, frames_time_major[t, j], state,
                    step_frames.write(j, frame), step_logits.write(j, logit))

        _, _, _, step_frames, step_logits = tf.while_loop(
            lambda j, *_: j < inner_steps,
            inner_body,
            (tf.constant(0), tf.zeros((batch, O)), model.initial_inner_state(ir),
             tf.TensorArray(tf.float32, size=inner_steps),
             tf.TensorArray(tf.float32, size=inner_steps)),
        )
        pad = [[0, M - inner_steps], [0, 0]]
        frames_ta = frames_ta.write(t, tf.pad(step_frames.stack(), pad + [[0, 0]]))  # (M, B, O)
        logits_ta = logits_ta.write(t, tf.pad(step_logits.stack(), pad))  # (M, B)
        return t + 1, outer_state, frames_ta, logits_ta

    _, _, frames_ta, logits_ta = tf.while_loop(
        lambda t, *_: t < steps,
        outer_body,
        (tf.constant(0), [tf.zeros((batch, s)) for s in model.outer_state_sizes],
         tf.TensorArray(tf.float32, size=steps), tf.TensorArray(tf.float32, size=steps)),
    )
    return {
        "frames": tf.transpose(frames_ta.stack(), [2, 0, 1, 3]),  # (B, T, M, O)
        "stop_logits": tf.transpose(logits_ta.stack(), [2, 0, 1]),  # (B, T, M)
    }
