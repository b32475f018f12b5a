"""What `sg.Stream` and `sg.LiteStream` share: a state holder over a runtime.

Numpy only: `sg.LiteStream` must run without TensorFlow.
"""

from streamgen import _checks


class StreamBase:
    """`step`, `feed`, `reset`, `get_state`, `set_state` over `self.runtime`.

    The stream holds the packed state of its `B` rows (`runtime.state_size`
    floats a row) and nothing else: every step is one `runtime.step` on it.
    A fresh (or `reset`) stream has no state (`_state is None`) and takes its
    batch size from the first input; later inputs must keep it.

    Subclasses set `runtime` (a `streamgen.runtime.Runtime` opened with
    this stream's stop criteria and cap, which are its defaults) and call
    `reset()` from `__init__`.
    """

    @property
    def max_steps(self):
        """The cap in use."""
        return self.runtime.max_steps

    @property
    def batch_size(self):
        """Rows in the current state; `None` before the first step."""
        return None if self._state is None else self._state.shape[0]

    def reset(self):
        """Returns to the initial state (the batch size is free again)."""
        self._state = None

    def step(self, x, decode=True):
        """Consumes one input and returns `Out[i]`.

        Args:
            x: float array `(input_size,)` or `(B, input_size)`.
            decode: bool, or bool array `(B,)`: where False, model_b is
                skipped for this step (model_a still advances) and `Out[i]`
                has length 0.

        Returns:
            For 1-D `x`, an `np.ndarray (L_i, output_size)`; for 2-D `x`, a
            list of `B` such arrays.

        Raises:
            ValueError: wrong width, batch size or `decode`, or non-finite
                values.
        """
        array = _checks.check_inputs(self.runtime, x, "x", ndim=(1, 2))
        rows = array[None] if array.ndim == 1 else array  # (B, I)
        batch = rows.shape[0]
        state = self._state
        if state is None or batch != state.shape[0]:  # (only a fresh stream takes a new one)
            _checks.check_batch(batch, self.batch_size, fresh=state is None)
            state = self.runtime.initial_state(batch)
        if decode is True:
            decode = None
        elif decode is None:
            raise _checks.invalid("decode", "a bool or a bool array", decode)
        else:
            decode = _checks.check_decode(decode, batch)
        frames, lengths, self._state = self.runtime._advance(rows, state, decode)
        return _checks.split_outputs(frames, lengths, array.ndim == 1)

    def feed(self, inputs):
        """Yields `step(x)` for each `x` of an iterable, lazily.

        Args:
            inputs: any iterable (a list, an array's rows, a file parser,
                a socket reader); each element is consumed only when the
                previous `Out[i]` has been yielded.

        Yields:
            What `step` returns, one per input.
        """
        for x in inputs:
            yield self.step(x)

    def get_state(self):
        """The carried state, as a nest of numpy arrays (copies).

        Returns:
            `{"outer": [...], "inner": [...]}`, each array `(B, size)`.
            Before the first step, the initial state for one row. States of
            `sg.Stream`, `sg.LiteStream` and a remote stream of the same
            model are interchangeable.
        """
        state = self._state if self._state is not None else self.runtime.initial_state(1)
        return self.runtime.unpack(state)

    def set_state(self, state):
        """Restores a state from `get_state()`; decoding resumes exactly.

        Args:
            state: `{"outer": [...], "inner": [...]}` with the shapes
                `get_state()` returns (any batch size, the same for all).

        Raises:
            ValueError: if the nest, a shape or a value (NaN, inf) does not
                fit this model.
        """
        packed = self.runtime.pack(state)
        if packed.shape[0] == 0:
            raise _checks.invalid("state", "at least one row", state)
        self._state = packed
