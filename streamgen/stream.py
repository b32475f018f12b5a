"""`Stream`: the carried state of a `StreamGen` and a generator over inputs.

The outer loop is plain Python: each `step` is one call of the compiled
outer step (model_a's cell, then model_b's whole inner loop), numpy in and
numpy out; between steps the state stays a tensor. `get_state` gives it as a
small nest of numpy arrays that can be stored and restored:

    {"outer": [np.ndarray (B, size), ...], "inner": [np.ndarray (B, size), ...]}
"""

import numpy as np

from streamgen import _checks
from streamgen._stream_base import StreamBase
from streamgen import decode as decode_lib
from streamgen._quiet import import_tensorflow

tf = import_tensorflow()


class Stream(StreamBase):
    """Step-by-step decoding with explicit, restorable state.

    Made by `StreamGen.open_stream()`. A fresh (or `reset`) stream takes its
    batch size from the first input: `x` of shape `(input_size,)` is one
    stream (batch 1), `(B, input_size)` is `B` streams stepped together,
    each row stopping on its own. Later inputs must keep that batch size.

    Args:
        model: a `sg.StreamGen`.
        stop: stop criteria for this stream; `None` uses the model's.
        max_steps: optional int in `[1, model.max_steps]`, a lower cap.
        jit_compile: compile the step with XLA.

    Example:

    >>> s = model.open_stream(stop=[sg.StopHead(0.7), sg.L2Norm(2.0)])
    >>> out = s.step(np.zeros(3))   # np.ndarray (L_0, output_size)
    >>> saved = s.get_state()
    >>> a = s.step(x1); s.set_state(saved); b = s.step(x1)   # a == b
    """

    def __init__(self, model, stop=None, max_steps=None, jit_compile=False):
        self.model = model
        self._spec = model  # what the input checks read
        self.criteria = decode_lib.resolve_stop(model, stop)
        self.max_steps = decode_lib.resolve_cap(model, max_steps)
        self._thresholds = tf.constant(
            [c.threshold for c in self.criteria], tf.float32, shape=[len(self.criteria)]
        )
        self._cap = tf.constant(self.max_steps, tf.int32)
        self._step = model._compiled.step_concrete(self.criteria, jit_compile)
        self._constants = {}  # batch -> (decode all True, stop_at), as tensors
        self.reset()

    def get_state(self):
        """The carried state, as a nest of numpy arrays (copies).

        Returns:
            `{"outer": [...], "inner": [...]}`, each array `(B, size)`.
            Before the first step, the initial state for one row.
        """
        state = self._state or self.model.get_initial_state(self._batch_size or 1)
        return {
            key: [np.array(a, np.float32, copy=True) for a in arrays]
            for key, arrays in state.items()
        }

    def set_state(self, state):
        """Restores a state from `get_state()`; decoding resumes exactly.

        Args:
            state: `{"outer": [...], "inner": [...]}` with the shapes
                `get_state()` returns (any batch size, the same for all).

        Raises:
            ValueError: if the nest or a shape does not match this model.
        """
        restored, batch = _checks.check_state(state, {
            "outer": self.model.outer_state_sizes,
            "inner": self.model.inner_state_sizes,
        })
        self._restore(restored, batch)

    def _initial_state(self, batch):
        return self.model.get_initial_state(batch)

    def _run(self, rows, state, decode):
        # Hot path: one call of the concrete function; the constant inputs
        # are tensors made once per batch size, and the state stays a tensor
        # from one step to the next (numpy only in `get_state`).
        batch = rows.shape[0]
        constants = self._constants.get(batch)
        if constants is None:
            constants = self._constants[batch] = (
                tf.ones([batch], tf.bool),
                tf.fill([batch], tf.constant(self.model.max_steps, tf.int32)),
            )
        decode_rows, stop_at = constants
        if decode is not True:
            decode_rows = np.broadcast_to(np.asarray(decode, bool), (batch,))
        frames, lengths, outer, inner = self._step(
            tf.constant(rows),
            state["outer"],
            state["inner"],
            decode_rows,
            stop_at,
            self._thresholds,
            self._cap,
        )
        return frames.numpy(), lengths.numpy(), {"outer": outer, "inner": inner}
