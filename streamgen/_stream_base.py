"""What `sg.Stream` and `sg.LiteStream` share: the step-by-step API.

Numpy only: `sg.LiteStream` must run without TensorFlow.
"""

from streamgen import _checks


class StreamBase:
    """`step`, `feed`, `reset` and `batch_size` over a subclass's runtime.

    A fresh (or `reset`) stream has no state (`_state is None`) and takes its
    batch size from the first input; later inputs must keep it.

    Subclasses set `_spec` (anything with `input_size` and `max_steps`, for
    the input checks) and implement:

    - `_initial_state(batch)`: the state of `batch` fresh rows;
    - `_run(rows, state, decode)`: one outer step on float32 `rows`
      `(B, input_size)` from `state`; returns numpy `frames`
      `(B, max_steps, output_size)`, numpy `lengths` `(B,)` and the new state;
    - `get_state()` / `set_state(state)`, the latter through `_restore`.
    """

    @property
    def batch_size(self):
        """Rows in the current state; `None` before the first step."""
        return self._batch_size

    def reset(self):
        """Returns to the initial state (the batch size is free again)."""
        self._state = None
        self._batch_size = None

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
            ValueError: wrong width or batch size, or non-finite values.
        """
        array = _checks.check_inputs(self._spec, x, "x", ndim=(1, 2))
        rows = array[None] if array.ndim == 1 else array  # (B, I)
        batch = rows.shape[0]
        if batch != self._batch_size:  # (only a fresh stream takes a new one)
            _checks.check_batch(batch, self._batch_size, fresh=self._state is None)
        state = self._state if self._state is not None else self._initial_state(batch)
        frames, lengths, self._state = self._run(rows, state, decode)
        self._batch_size = batch
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

    def _restore(self, state, batch):
        """Sets a checked state of `batch` rows (for `set_state`)."""
        self._state = state
        self._batch_size = batch
