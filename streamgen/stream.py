"""`Stream`: one stream's carried state over any runtime, and a generator over inputs.

The outer loop is plain Python: each `step` is one call of a runtime's
compiled outer step (model_a's cell, then model_b's whole inner loop),
numpy in and numpy out. The runtime can be the TensorFlow step of a model
(`TFRuntime`), a `.tflite` export on LiteRT (`LiteRuntime`, no TensorFlow),
or a server (`sg.connect(url).open_stream()`): the stream's API and its
results are the same. `get_state` gives the state as a small nest of numpy
arrays that can be stored and restored, on any of them:

    {"outer": [np.ndarray (B, size), ...], "inner": [np.ndarray (B, size), ...]}

This module does not import TensorFlow.
"""

from streamgen import checks
from streamgen import randomness
from streamgen.runtimes.base import Runtime


class Stream:
    """Step-by-step decoding with explicit, restorable state.

    A fresh (or `reset`) stream takes its batch size from the first input:
    `x` of shape `(input_size,)` is one stream (batch 1), `(B, input_size)`
    is `B` streams stepped together, each row stopping on its own. Later
    inputs must keep that batch size.

    The stream holds the packed state of its rows and nothing else: every
    step is one call of `runtime.advance` on it.

    Args:
        runtime: a `sg.Runtime` (`sg.open_runtime(...)`), or what
            `sg.open_runtime` opens: a `sg.StreamGen`, or the path of a
            `.keras` model or a `.tflite` export.
        stop: stop criteria for this stream (`sg.StopCriterion` objects or
            their dicts); `None` keeps the runtime's.
        max_steps: optional int, a lower cap; `None` keeps the runtime's.
        sampler: how frames are drawn (`sg.samplers.Greedy()`,
            `sg.samplers.TopK(5, temperature=0.8)`, `"top-p"`, a config
            dict); `None` keeps the runtime's (greedy unless opened with
            one). A random sampler on `mse` / `mae` frames is a
            `ValueError` naming the frame kind.
        seed: int in `[0, 2**32)`, or one per row: the stream's random
            numbers (row `b` of a batch gets `randomness.derive_seed(seed,
            b)`, row 0 the seed itself, as record `b` of `decode --seed`).
            `None` draws a fresh seed (`randomness.new_seed()`). The state carries the
            seed and the position, so a restored state replays exactly.
        **options: options of `sg.open_runtime` when `runtime` is not a
            runtime yet (`jit_compile=`, `num_threads=`).

    Attributes:
        runtime: the stateless runtime it steps, opened with this stream's
            stop criteria and cap.
        criteria: the stop criteria in use, as `{"class_name", "config"}`
            dicts.
        max_steps: the cap in use.
        input_size, output_size: from the model.

    Example:

    >>> s = sg.Stream(model, stop=[sg.StopHead(0.7), sg.L2Norm(2.0)])
    >>> first = s.step(np.zeros(3))   # np.ndarray (L_0, output_size)
    >>> saved = s.get_state()
    >>> a = s.step(np.ones(3)); s.set_state(saved); b = s.step(np.ones(3))
    >>> bool(np.array_equal(a, b))
    True
    """

    def __init__(self, runtime, stop=None, max_steps=None, sampler=None, seed=None,
                 **options):
        if not isinstance(runtime, Runtime):
            from streamgen.runtimes import open_runtime

            if sampler is not None:
                options["sampler"] = sampler
            runtime = open_runtime(runtime, stop=stop, max_steps=max_steps, **options)
        elif options:
            raise TypeError(f"Received options {sorted(options)} with an open runtime; "
                            "they are options of sg.open_runtime.")
        elif stop is not None or max_steps is not None or sampler is not None:
            runtime = runtime.with_options(stop=stop, max_steps=max_steps, sampler=sampler)
        self.runtime = runtime
        if seed is None:
            seed = randomness.new_seed()
        elif isinstance(seed, (list, tuple)) or hasattr(seed, "shape"):
            seed = [randomness.check_seed("seed", s) for s in list(seed)]
        else:
            seed = randomness.check_seed("seed", seed)
        self.seed = seed
        self.reset()

    @property
    def sampler(self):
        """The sampler in use (`sg.samplers.Sampler`)."""
        return self.runtime.sampler

    @property
    def criteria(self):
        """The stop criteria in use (`{"class_name", "config"}` dicts)."""
        return self.runtime.criteria

    @property
    def max_steps(self):
        """The cap in use."""
        return self.runtime.max_steps

    @property
    def input_size(self):
        return self.runtime.input_size

    @property
    def output_size(self):
        return self.runtime.output_size

    @property
    def batch_size(self):
        """Rows in the current state; `None` before the first step."""
        return None if self._state is None else self._state.shape[0]

    def reset(self):
        """Returns to the initial state (the batch size is free again)."""
        if hasattr(self, "_state"):  # (not in __init__)
            self.runtime.release(self._state)
        self._state = None

    def step(self, x, generate=True):
        """Consumes one input and returns `Out[i]`.

        Args:
            x: float array `(input_size,)` or `(B, input_size)`.
            generate: bool, or bool array `(B,)`: where False, model_b is
                skipped for this step (model_a still advances) and `Out[i]`
                has length 0.

        Returns:
            For 1-D `x`, an `np.ndarray (L_i, output_size)`; for 2-D `x`, a
            list of `B` such arrays.

        Raises:
            ValueError: wrong width, batch size or `generate`, or non-finite
                values.
        """
        array = checks.check_inputs(self.runtime, x, "x", ndim=(1, 2))
        rows = array[None] if array.ndim == 1 else array  # (B, I)
        batch = rows.shape[0]
        state = self._state
        if state is None or batch != state.shape[0]:  # (only a fresh stream takes a new one)
            checks.check_batch(batch, self.batch_size, fresh=state is None)
            state = self.runtime.initial_state(batch, seeds=self.seed)
        if generate is True:
            generate = None
        elif generate is None:
            raise checks.invalid("generate", "a bool or a bool array", generate)
        else:
            generate = checks.check_generate(generate, batch)
        frames, lengths, self._state = self.runtime.advance(rows, state, generate)
        return split_outputs(frames, lengths, array.ndim == 1)

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
            `{"outer": [...], "inner": [...], "random": [(B, 4)]}`, each
            array `(B, size)`; `"random"` holds each row's seed and
            position (`randomness.encode`). Before the first step, the
            initial state for one row. States of streams of the same model
            are interchangeable, whatever their runtime.
        """
        state = self._state
        if state is None:
            seed = self.seed[0] if isinstance(self.seed, list) else self.seed
            state = self.runtime.initial_state(1, seeds=seed)
        return self.runtime.unpack(state)

    def set_state(self, state):
        """Restores a state from `get_state()`; decoding resumes exactly.

        Args:
            state: `{"outer": [...], "inner": [...], "random": [...]}`
                with the shapes `get_state()` returns (any batch size, the
                same for all); without `"random"`, seed 0 at position 0.

        Raises:
            ValueError: if the nest, a shape or a value (NaN, inf) does not
                fit this model.
        """
        packed = self.runtime.pack(state)
        if packed.shape[0] == 0:
            raise checks.invalid("state", "at least one row", state)
        self._state = packed

    def __repr__(self):
        return f"{type(self).__name__}({self.runtime!r})"


class LiteStream(Stream):
    """A `Stream` over a `.tflite` export, without TensorFlow.

    `sg.LiteStream(path, ...)` is `sg.Stream(sg.LiteRuntime(path, ...))`.

    Args:
        path: str or path-like, a `.tflite` file written by
            `StreamGen.export_litert` (or `streamgen export`).
        stop: stop criteria for this stream, overriding those stored in
            the file: any built-in criteria (`sg.StopCriterion` objects or
            their serialized dicts, `{"class_name": "StopHead", "config":
            {"threshold": 0.7}}`, which need no TensorFlow), a list of
            them, or `[]` (the cap alone). Criteria of the user's own
            classes must be those exported, in order. `None` uses the
            exported criteria.
        max_steps: optional int in `[1, max_steps of the export]`, a lower
            cap.
        sampler, seed: as in `sg.Stream` (every sampler and
            `sg.StopSample` run in the file, with the same draws as
            TensorFlow).
        num_threads: threads of the interpreter. Defaults to 1, the
            fastest at batch 1; more can help for large batches.

    Attributes:
        metadata: everything the export stored (a dict).
        decoder_state: `"reset"` or `"carry"`, from the export.

    Raises:
        ImportError: if `ai-edge-litert` is not installed.
        NotAnExportError (a `ValueError`): if the file is not an intact
            streamgen LiteRT export.
        ValueError: if `stop` has other criteria of the user's own classes
            than the export (re-export to change them), or `max_steps` is
            out of range.

    Example:

    >>> metadata = model.export_litert("model.tflite")
    >>> s = sg.LiteStream("model.tflite", stop=[sg.StopHead(0.7)])
    >>> first = s.step(np.zeros(3))   # np.ndarray (L_0, output_size)
    >>> saved = s.get_state()
    >>> a = s.step(np.ones(3)); s.set_state(saved); b = s.step(np.ones(3))
    >>> bool(np.array_equal(a, b))
    True
    """

    def __init__(self, path, stop=None, max_steps=None, num_threads=1, sampler=None,
                 seed=None):
        from streamgen.runtimes.lite import LiteRuntime

        super().__init__(LiteRuntime(path, stop=stop, max_steps=max_steps,
                                     num_threads=num_threads, sampler=sampler), seed=seed)

    @property
    def metadata(self):
        return self.runtime.metadata

    @property
    def decoder_state(self):
        return self.runtime.decoder_state


def split_outputs(frames, lengths, single):
    """`Out[i]` per row from the padded frame buffer.

    Args:
        frames: float array `(B, max_steps, output_size)`.
        lengths: int array `(B,)`.
        single: whether the input was 1-D (one stream).

    Returns:
        For `single`, an `np.ndarray (L, output_size)`; else a list of `B`.
    """
    if single:
        return frames[0, : lengths[0]]
    return [frames[b, :length] for b, length in enumerate(lengths.tolist())]
