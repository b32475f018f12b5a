"""The stateless runtime step that every layer of streamgen stands on.

A *runtime* is one outer step of a model — model_a's cell, then model_b's
inner loop with its stop checks — as a pure function of arrays:

    frames, lengths, new_state = runtime.step(x, state)

for **any** set of rows on **any** call: row `b` of `x` and `state` is one
stream, and the rows of one call need not be the rows of the last one. The
state of a row is one float32 vector of `state_size` values (model_a's state
tensors, then model_b's, side by side), so a table of streams is one
`(N, state_size)` array and stepping a subset of them is

    frames, lengths, table[rows] = runtime.step(x, table[rows])[0:3]

`Stream` and `LiteStream` are thin state holders over a runtime; a server
batches the rows of many connections into one `step`; offline decoding
steps thousands of sequences at once. Per-row stop thresholds and caps
(`thresholds=`, `caps=`) let streams with different settings share a call.

Stop criteria per row. Every runtime is compiled with all three built-in
kinds (`sg.StopHead`, `sg.L2Norm` above, `sg.L2Norm` below) at once, so a
row's criteria can be any mix of them, `[]` (the cap alone) included: a
row's `thresholds` are float32 `(K,)` with `K = 3 + ` the number of
criteria of the user's own classes the runtime was opened with; columns 0,
1, 2 are the built-in kinds, `+inf`, `+inf`, `-inf` where a kind is off
(see `streamgen.criteria`). `runtime.options(stop=..., max_steps=...)`
turns a row's stop list and cap into its `thresholds` row and cap. Only
criterion classes that users write themselves are fixed per runtime.

Two implementations:

- `TFRuntime` (`streamgen.runtimes.tf`): the compiled TensorFlow step, XLA optional.
- `LiteRuntime` (`streamgen.runtimes.lite`): a `.tflite` export on `ai-edge-litert`
  and numpy alone, with one interpreter per batch-size bucket.

`open_runtime(model_or_path)` opens either. This module does not import
TensorFlow.
"""

import hashlib

import numpy as np

from streamgen import checks
from streamgen import criteria


class Runtime:
    """One outer step of a model, stateless, for any set of rows.

    Subclasses set the attributes below and implement `run` and
    `with_options`.

    Attributes:
        input_size: width of each input row.
        output_size: width of each frame.
        trained_max_steps: the model's cap; `frames` has this many slots.
        max_steps: the default cap of this runtime (`<= trained_max_steps`).
        decoder_state: `"reset"` or `"carry"`.
        state_sizes: `{"outer": [int, ...], "inner": [int, ...]}`, the width
            of each state tensor.
        state_size: their sum, the width of a packed state row.
        criteria: the default stop criteria of a row, as
            `[{"class_name": "StopHead", "config": {"threshold": 0.5}}, ...]`.
        custom_criteria: those of them that are not built-in (user-written
            classes), whose kinds are fixed for every row; usually `[]`.
        thresholds: float32 `(3 + len(custom_criteria),)`, the default row
            of `step`'s `thresholds=` (see the module docstring).
        fingerprint: a string that identifies the model's weights and
            shapes: equal for a `.keras` model and its `.tflite` export, so
            that a state can move between them (see `streamgen.remote.wire`).
    """

    # ------------------------------------------------------------------ #
    # State.
    # ------------------------------------------------------------------ #
    @property
    def state_size(self):
        return sum(self.state_sizes["outer"]) + sum(self.state_sizes["inner"])

    def initial_state(self, n):
        """The packed state of `n` fresh rows: float32 zeros `(n, state_size)`."""
        n = checks.check_count("n", n)
        return np.zeros((n, self.state_size), np.float32)

    def pack(self, state):
        """A state nest -> the packed float32 array `(B, state_size)`.

        Args:
            state: `{"outer": [np.ndarray (B, size), ...], "inner": [...]}`,
                as `Stream.get_state()` returns.

        Raises:
            ValueError: if the nest, a shape or a value (NaN, inf, or a
                magnitude no recurrent state reaches) is wrong.
        """
        restored, _ = checks.check_state(state, self.state_sizes)
        parts = restored["outer"] + restored["inner"]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def unpack(self, packed):
        """The packed array `(B, state_size)` -> a state nest (copies)."""
        packed = self.check_packed(np.asarray(packed))
        offsets = np.cumsum([0] + self.state_sizes["outer"] + self.state_sizes["inner"])
        parts = [packed[:, a:b].copy() for a, b in zip(offsets[:-1], offsets[1:])]
        outer = len(self.state_sizes["outer"])
        return {"outer": parts[:outer], "inner": parts[outer:]}

    def check_packed(self, packed, rows=None, name="state"):
        """Validates a packed state; returns it as float32 `(B, state_size)`."""
        return checks.check_packed_state(packed, self.state_size, rows=rows, name=name)

    # ------------------------------------------------------------------ #
    # Stop options.
    # ------------------------------------------------------------------ #
    def options(self, stop=None, max_steps=None):
        """Per-row settings for `step` from a `stop=` and `max_steps=`.

        Args:
            stop: `None` (this runtime's criteria), or any built-in
                criteria (`sg.StopCriterion` objects or their dicts,
                `{"class_name": "StopHead", "config": {"threshold": 0.7}}`),
                a list of them, or `[]` (the cap alone). Criteria of the
                user's own classes must be those of `custom_criteria`, in
                order (only their thresholds can differ).
            max_steps: `None` (this runtime's cap) or an int in
                `[1, trained_max_steps]`.

        Returns:
            `(thresholds, cap)`: float32 `(3 + len(custom_criteria),)` and
            an int, one row of `step`'s `thresholds=` and `caps=`.

        Raises:
            TypeError, ValueError: as `sg.LiteStream(stop=..., max_steps=...)`.
        """
        thresholds = (self.thresholds.copy() if stop is None else
                      criteria.thresholds_row(stop, self.custom_criteria, self.kind_hint))
        cap = self.max_steps if max_steps is None else checks.resolve_cap(
            self.trained_max_steps, max_steps)
        return thresholds, cap

    kind_hint = ""  # appended to the "other kinds" error (how to change them)

    # ------------------------------------------------------------------ #
    # The step.
    # ------------------------------------------------------------------ #
    def step(self, x, state, decode=None, thresholds=None, caps=None):
        """One outer step of `B` independent rows.

        Args:
            x: float array `(B, input_size)`.
            state: float array `(B, state_size)`, the packed states
                (`initial_state(B)` for fresh rows).
            decode: `None` (every row), or bool array `(B,)`: where False,
                model_b is skipped (the row's `Out[i]` is empty, model_a
                still advances).
            thresholds: `None` (this runtime's), or float array
                `(B, 3 + len(custom_criteria))`, each row's stop thresholds
                (rows from `options()`; see the module docstring).
            caps: `None` (this runtime's cap), or int array `(B,)` in
                `[0, trained_max_steps]`: no inner step `j >= caps[b]` runs.

        Returns:
            `(frames, lengths, new_state)`: float32 `(B, trained_max_steps,
            output_size)`, zero past each row's length; int32 `(B,)`; float32
            `(B, state_size)`. Row `b` of `Out[i]` is `frames[b, :lengths[b]]`.

        Raises:
            ValueError: for a wrong shape or non-finite value in any
                argument, naming it.
        """
        x = checks.check_inputs(self, x, "x", ndim=2)
        rows = x.shape[0]
        state = self.check_packed(state, rows=rows)
        decode = checks.check_decode(decode, rows)
        thresholds = checks.check_thresholds(thresholds, rows, len(self.thresholds))
        caps = checks.check_caps(caps, rows, self.trained_max_steps)
        if rows == 0:
            return (np.zeros((0, self.trained_max_steps, self.output_size), np.float32),
                    np.zeros((0,), np.int32), np.zeros((0, self.state_size), np.float32))
        return self.run(x, state, decode, thresholds, caps)

    def run(self, x, state, decode=None, thresholds=None, caps=None):
        """`step` without the checks, for callers that have validated already.

        The server's batcher checks each request as it arrives and then
        steps many of them at once; it calls this. The arguments must be
        what `step` would accept (numpy arrays of the right shapes and
        dtypes); `decode`, `thresholds` and `caps` may be `None` (this
        runtime's defaults).

        Returns:
            What `step` returns.
        """
        raise NotImplementedError

    def advance(self, x, state, decode=None):
        """`run` with this runtime's options, for a holder of `state`.

        Unchecked like `run`. The state returned may be of the runtime's
        own array type (a tensor, for TensorFlow: a numpy round trip costs
        more than a small model's step); `advance`, `unpack` and
        `np.asarray` accept it. `sg.Stream` steps with this.
        """
        return self.run(x, state, decode)

    def run_sequences(self, x, steps, lengths=None):
        """Decodes a padded batch of whole sequences from fresh state.

        Unchecked (`sg.decode_sequences` and the offline decoder check;
        `offline.decode_padded` is the checked call). This implementation
        steps over time, rows leaving the batch as they end; `TFRuntime`
        runs the whole outer loop in one graph instead.

        Args:
            x: float32 `(B, T, input_size)`, sequences padded at the end.
            steps: int `(B,)`, each row's real steps.
            lengths: optional int32 `(B, T)`, forced lengths: each row's
                criteria get thresholds that never fire and its cap is its
                length + 1, so that the STOP step runs (in `"carry"` mode
                it changes the state handed on) and its frame is dropped.

        Returns:
            `(frames, lengths)`: float32 `(B, T, trained_max_steps,
            output_size)`; int32 `(B, T)`. Values past a row's real steps
            are unspecified (the caller zeroes them).

        Raises:
            ValueError: forced lengths with a criterion of the user's own
                class (no threshold is known never to fire).
        """
        if lengths is not None:
            return _forced_sequences(self, x, steps, lengths)
        return _stepped_sequences(self, x, steps)

    def release(self, state):
        """Called by a holder that drops `state` (`Stream.reset`); `state` may be
        `None`. Nothing to do for a local runtime; a remote one closes the
        server's rows."""

    def with_options(self, stop=None, max_steps=None):
        """This runtime with other default stop criteria or cap.

        The model is not opened again: the compiled step (TensorFlow) or
        the file's checked bytes (LiteRT) are shared.

        Args:
            stop: stop criteria (`sg.StopCriterion` objects or their
                dicts); `None` keeps this runtime's.
            max_steps: an int in `[1, trained_max_steps]`; `None` keeps
                this runtime's.

        Returns:
            A runtime of the same class.
        """
        raise NotImplementedError

    def describe(self):
        """What this runtime's model is, as a JSON-ready dict.

        The one description of a model: `streamgen info` prints it and a
        server answers it at `GET /v1/model` (a client reads it back).

        Returns:
            dict with `input_size`, `output_size`, `max_steps` (the trained
            cap), `decoder_state`, `stop` (the criteria as
            `{"class_name", "config"}` dicts), `state_sizes`, `state_size`,
            `fingerprint` and `runtime` (the class name); `TFRuntime` adds
            the model's own facts (cells, `ir_size`, `frame_loss`,
            `parameters`), `LiteRuntime` the export's (`format`, `cell`).
        """
        return {
            "input_size": self.input_size,
            "output_size": self.output_size,
            "max_steps": self.trained_max_steps,
            "decoder_state": self.decoder_state,
            "stop": [dict(c, config=dict(c["config"])) for c in self.criteria],
            "state_sizes": {k: list(v) for k, v in self.state_sizes.items()},
            "state_size": self.state_size,
            "fingerprint": self.fingerprint,
            "runtime": type(self).__name__,
        }

    def __repr__(self):
        return (f"{type(self).__name__}(input_size={self.input_size}, "
                f"output_size={self.output_size}, max_steps={self.max_steps}, "
                f"criteria={criteria.describe_criteria(self.criteria)})")


def fingerprint_of(config, arrays):
    """The fingerprint of a model: its shapes and weights, hashed.

    Args:
        config: dict of the facts a state depends on (sizes, modes).
        arrays: the model's weights, in a fixed order.

    Returns:
        `"sha256:<first 16 hex digits>"`.
    """
    digest = hashlib.sha256(repr(sorted(config.items())).encode("utf-8"))
    for array in arrays:
        array = np.ascontiguousarray(array, np.float32)
        digest.update(str(array.shape).encode("ascii"))
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def _stepped_sequences(runtime, x, steps):
    """Steps the runtime over time; rows leave the batch when they end."""
    batch, time_steps = x.shape[:2]
    order = np.argsort(-steps, kind="stable")  # longest first: active rows are a prefix
    ordered_steps = steps[order]
    frames = np.zeros((batch, time_steps, runtime.trained_max_steps, runtime.output_size),
                      np.float32)
    lengths = np.zeros((batch, time_steps), np.int32)
    state = runtime.initial_state(batch)
    xs = x[order]  # (B, T, I), longest first
    for t in range(time_steps):
        active = int(np.count_nonzero(ordered_steps > t))
        if not active:
            break
        f, n, state[:active] = runtime.run(xs[:active, t], state[:active])
        frames[order[:active], t] = f
        lengths[order[:active], t] = n
    return frames, lengths


def _forced_sequences(runtime, x, steps, lengths):
    """`Runtime.run_sequences(..., lengths)` by stepping (see there)."""
    batch, time_steps = x.shape[:2]
    cap = runtime.trained_max_steps
    forced = lengths
    if runtime.custom_criteria:
        c = runtime.custom_criteria[0]
        raise ValueError(
            f"Received `lengths` for a runtime with the criterion {c['class_name']}, "
            "whose never-firing threshold is unknown; force lengths with the "
            "TensorFlow model (model.decode(x, lengths=...)).")
    never, _ = runtime.options(stop=[])  # every built-in kind off
    thresholds = np.tile(never, (batch, 1))  # (B, K)
    frames = np.zeros((batch, time_steps, cap, runtime.output_size), np.float32)
    state = runtime.initial_state(batch)
    for t in range(int(steps.max()) if batch else 0):
        caps = np.minimum(forced[:, t] + 1, cap).astype(np.int32)  # the STOP step runs
        frames[:, t], _, state = runtime.run(x[:, t], state, thresholds=thresholds, caps=caps)
    emitted = np.arange(cap)[None, None, :] < forced[..., None]  # drop the STOP frame
    frames[~emitted] = 0.0
    return frames, forced
