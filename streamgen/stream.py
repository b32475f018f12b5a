"""`Stream`: the carried state of a `StreamGen` and a generator over inputs.

The outer loop is plain Python: each `step` is one call of the compiled
outer step (model_a's cell, then model_b's whole inner loop) through a
`TFRuntime`, numpy in and numpy out. `get_state` gives the state as a small
nest of numpy arrays that can be stored and restored:

    {"outer": [np.ndarray (B, size), ...], "inner": [np.ndarray (B, size), ...]}
"""

from streamgen._stream_base import StreamBase


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

    Attributes:
        runtime: the stateless `TFRuntime` it steps (`sg.open_runtime`).
        criteria: the stop criteria in use, a tuple of `sg.StopCriterion`.
        max_steps: the cap in use.

    Example:

    >>> s = model.open_stream(stop=[sg.StopHead(0.7), sg.L2Norm(2.0)])
    >>> first = s.step(np.zeros(3))   # np.ndarray (L_0, output_size)
    >>> saved = s.get_state()
    >>> a = s.step(np.ones(3)); s.set_state(saved); b = s.step(np.ones(3))
    >>> bool(np.array_equal(a, b))
    True
    """

    def __init__(self, model, stop=None, max_steps=None, jit_compile=False):
        from streamgen.decode import TFRuntime

        self.model = model
        self.runtime = TFRuntime(model, stop=stop, max_steps=max_steps,
                                 jit_compile=jit_compile)
        self.criteria = self.runtime.stop
        self.reset()
