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

Stop criteria per row. Every runtime is compiled with all four built-in
kinds (`sg.StopHead`, `sg.L2Norm` above, `sg.L2Norm` below, `sg.StopSample`)
at once, so a row's criteria can be any mix of them, `[]` (the cap alone)
included: a row's `thresholds` are float32 `(K,)` with `K = 4 + ` the number
of criteria of the user's own classes the runtime was opened with; columns
0-3 are the built-in kinds, `+inf`, `+inf`, `-inf`, `+inf` where a kind is off
(see `streamgen.criteria`). `runtime.options(stop=..., max_steps=...)`
turns a row's stop list and cap into its `thresholds` row and cap. Only
criterion classes that users write themselves are fixed per runtime.

Two implementations:

- `TFRuntime` (`streamgen.runtimes.tf`): the compiled TensorFlow step, XLA optional.
- `LiteRuntime` (`streamgen.runtimes.lite`): a `.tflite` export on `ai-edge-litert`
  and numpy alone, with one interpreter per batch-size bucket.

Randomness is an input. Each row's state ends with `RANDOM_COLUMNS` (4)
float32 columns, its seed and position (`randomness.encode`: 16-bit
halves, exact in float32); every step moves the position one further. A
step that samples (a row with a non-greedy sampler, or `sg.StopSample`)
gets the uniform numbers of each row, drawn in numpy by
`randomness.uniforms(seed, position, max_steps * draws_per_step)`, outside
the compiled function: TF, XLA and LiteRT compute the same function of the
same numbers, a restored state replays exactly, and each row's draws
depend on nothing but its own seed and position. The sampler parameters
are per-row inputs too (`params=`, `(B, 4)`, `samplers.row_params`), so
streams with different samplers share one call. A row greedy and without
`StopSample` reads no draw: an all-greedy call runs a step without them.

`open_runtime(model_or_path)` opens either. This module does not import
TensorFlow.
"""

import hashlib

import numpy as np

from streamgen import checks
from streamgen import criteria
from streamgen import randomness
from streamgen import samplers

RANDOM_COLUMNS = 4  # a packed state's last columns: seed and position halves


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
        state_size: their sum plus `RANDOM_COLUMNS` (the row's seed and
            position), the width of a packed state row.
        frame_loss: the model's frame kind (`"mse"`, `"mae"`,
            `"categorical"` or `"mdn"`).
        sampler: the default `sg.samplers.Sampler` of a row.
        params: float32 `(4,)`, its row of `step`'s `params=`.
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
        return (sum(self.state_sizes["outer"]) + sum(self.state_sizes["inner"])
                + RANDOM_COLUMNS)

    def initial_state(self, n, seeds=None):
        """The packed state of `n` fresh rows `(n, state_size)`.

        Args:
            n: int, the rows.
            seeds: `None` (seed 0 for every row), an int (row `b` gets
                `randomness.derive_seed(seed, b)`, row 0 `seed` itself), or
                `n` ints: the rows' seeds.

        Returns:
            float32 zeros but the random columns: each row's seed, at
            position 0.
        """
        n = checks.check_count("n", n)
        state = np.zeros((n, self.state_size), np.float32)
        if seeds is not None:
            state[:, -RANDOM_COLUMNS:] = randomness.encode(row_seeds(seeds, n), np.zeros(n, np.int64))
        return state

    def pack(self, state):
        """A state nest -> the packed float32 array `(B, state_size)`.

        Args:
            state: `{"outer": [np.ndarray (B, size), ...], "inner": [...],
                "random": [np.ndarray (B, 4)]}`, as `Stream.get_state()`
                returns; without `"random"`, seed 0 at position 0.

        Raises:
            ValueError: if the nest, a shape or a value (NaN, inf, or a
                magnitude no recurrent state reaches) is wrong.
        """
        return pack_nest(state, self.state_sizes)

    def unpack(self, packed):
        """The packed array `(B, state_size)` -> a state nest (copies)."""
        packed = self.check_packed(np.asarray(packed))
        return unpack_nest(packed, self.state_sizes)

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

    def sampler_params(self, sampler=None):
        """A row of `step`'s `params=` for a sampler.

        Args:
            sampler: `None` (this runtime's), or anything
                `sg.samplers.get` takes (`"top-k"`, `sg.samplers.TopP(0.9)`,
                `{"class_name": "Random", "config": {...}}`).

        Returns:
            float32 `(4,)`.

        Raises:
            ValueError: a bad sampler, or one that does not apply to this
                model's frames (naming the frame kind).
        """
        if sampler is None:
            return self.params.copy()
        sampler = samplers.check_applies(sampler, self.frame_loss)
        return np.asarray(sampler.params(), np.float32)

    @property
    def draws_per_step(self):
        """Uniforms one inner step reads (`samplers.draws_per_step`)."""
        return samplers.draws_per_step(self.frame_loss, self.output_size)

    def samples(self, thresholds=None, params=None):
        """Whether a call with these per-row inputs (`None`: this
        runtime's) reads random numbers: a non-greedy row or `StopSample`."""
        params = self.params[None] if params is None else params
        thresholds = self.thresholds[None] if thresholds is None else thresholds
        return bool((params[:, 0] < 0.5).any()) or criteria.samples(thresholds)

    kind_hint = ""  # appended to the "other kinds" error (how to change them)

    # ------------------------------------------------------------------ #
    # The step.
    # ------------------------------------------------------------------ #
    def step(self, x, state, generate=None, thresholds=None, caps=None, params=None):
        """One outer step of `B` independent rows.

        Args:
            x: float array `(B, input_size)`.
            state: float array `(B, state_size)`, the packed states
                (`initial_state(B)` for fresh rows).
            generate: `None` (every row), or bool array `(B,)`: where False,
                model_b is skipped (the row's `Out[i]` is empty, model_a
                still advances).
            thresholds: `None` (this runtime's), or float array
                `(B, 3 + len(custom_criteria))`, each row's stop thresholds
                (rows from `options()`; see the module docstring).
            caps: `None` (this runtime's cap), or int array `(B,)` in
                `[0, trained_max_steps]`: no inner step `j >= caps[b]` runs.
            params: `None` (this runtime's sampler), or float array
                `(B, 4)`, each row's sampler parameters (rows from
                `sampler_params()`). The draws come from each row's seed
                and position in `state`.

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
        generate = checks.check_generate(generate, rows)
        thresholds = checks.check_thresholds(thresholds, rows, len(self.thresholds))
        caps = checks.check_caps(caps, rows, self.trained_max_steps)
        params = check_params(params, rows, self.frame_loss)
        if rows == 0:
            return (np.zeros((0, self.trained_max_steps, self.output_size), np.float32),
                    np.zeros((0,), np.int32), np.zeros((0, self.state_size), np.float32))
        return self.run(x, state, generate, thresholds, caps, params)

    def run(self, x, state, generate=None, thresholds=None, caps=None, params=None,
            samples=None):
        """`step` without the checks, for callers that have validated already.

        The server's batcher checks each request as it arrives and then
        steps many of them at once; it calls this. The arguments must be
        what `step` would accept (numpy arrays of the right shapes and
        dtypes); `generate`, `thresholds`, `caps` and `params` may be
        `None` (this runtime's defaults). `samples`, if not `None`, must be
        `self.samples(thresholds, params)`, known already (the batcher
        counts its sampling rows): it spares that test on every call.

        Returns:
            What `step` returns.
        """
        raise NotImplementedError

    def advance(self, x, state, generate=None):
        """`run` with this runtime's options, for a holder of `state`.

        Unchecked like `run`. The state returned may be of the runtime's
        own array type (a tensor, for TensorFlow: a numpy round trip costs
        more than a small model's step); `advance`, `unpack` and
        `np.asarray` accept it. `sg.Stream` steps with this.
        """
        return self.run(x, state, generate)

    def run_sequences(self, x, steps, lengths=None, seeds=None):
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
            seeds: optional int `(B,)`, each row's seed (read when the
                runtime samples); `None`: seed 0. Row `b` equals a stream
                of seed `seeds[b]`, whatever the other rows.

        Returns:
            `(frames, lengths)`: float32 `(B, T, trained_max_steps,
            output_size)`; int32 `(B, T)`. Values past a row's real steps
            are unspecified (the caller zeroes them).

        Raises:
            ValueError: forced lengths with a criterion of the user's own
                class (no threshold is known never to fire).
        """
        if lengths is not None:
            return _forced_sequences(self, x, steps, lengths, seeds)
        return _stepped_sequences(self, x, steps, seeds)

    def release(self, state):
        """Called by a holder that drops `state` (`Stream.reset`); `state` may be
        `None`. Nothing to do for a local runtime; a remote one closes the
        server's rows."""

    def with_options(self, stop=None, max_steps=None, sampler=None):
        """This runtime with other default stop criteria, cap or sampler.

        The model is not opened again: the compiled step (TensorFlow) or
        the file's checked bytes (LiteRT) are shared.

        Args:
            stop: stop criteria (`sg.StopCriterion` objects or their
                dicts); `None` keeps this runtime's.
            max_steps: an int in `[1, trained_max_steps]`; `None` keeps
                this runtime's.
            sampler: a sampler (anything `sg.samplers.get` takes); `None`
                keeps this runtime's.

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
            `{"class_name", "config"}` dicts), `frame_loss`, `sampler` (the
            default sampler, `samplers.serialize`), `state_sizes`,
            `state_size`, `fingerprint` and `runtime` (the class name);
            `TFRuntime` adds the model's own facts (cells, `ir_size`,
            `mixtures`, `parameters`), `LiteRuntime` the export's
            (`format`, `cell`).
        """
        return {
            "input_size": self.input_size,
            "output_size": self.output_size,
            "max_steps": self.trained_max_steps,
            "decoder_state": self.decoder_state,
            "stop": [dict(c, config=dict(c["config"])) for c in self.criteria],
            "frame_loss": self.frame_loss,
            "sampler": samplers.serialize(self.sampler),
            "state_sizes": {k: list(v) for k, v in self.state_sizes.items()},
            "state_size": self.state_size,
            "fingerprint": self.fingerprint,
            "runtime": type(self).__name__,
        }

    def __repr__(self):
        return (f"{type(self).__name__}(input_size={self.input_size}, "
                f"output_size={self.output_size}, max_steps={self.max_steps}, "
                f"criteria={criteria.describe_criteria(self.criteria)})")


def row_seeds(seeds, n):
    """`seeds=` of `initial_state` -> int64 `(n,)`: an int `s` gives row `b`
    the seed `randomness.derive_seed(s, b)` (row 0: `s` itself), as record
    `b` of `decode --seed s`; a sequence gives one seed per row."""
    if isinstance(seeds, (list, tuple, np.ndarray)):
        values = [randomness.check_seed("seed", s) for s in np.asarray(seeds).reshape(-1).tolist()]
        if len(values) != n:
            raise ValueError(
                "Received an invalid value for argument `seed`, expected an int "
                f"or {n} ints (one per row), got {len(values)}.")
        return np.asarray(values, np.int64)
    seed = randomness.check_seed("seed", seeds)
    return randomness.derive_seeds(seed, n)


def in_chunks(run, size, x, state, *per_row, **options):
    """`run(x, state, *per_row, **options)` on at most `size` rows at a time.

    Args:
        run: a runtime's `run` (or its like): `(x, state, *per_row)` ->
            a tuple of arrays with the rows first.
        size: positive int, the most rows of one call.
        x, state: arrays `(B, ...)`.
        *per_row: arrays `(B, ...)` or `None` (this runtime's default),
            cut like `x`.
        **options: passed to every call as they are.

    Returns:
        `run`'s outputs, each concatenated over the chunks.
    """
    rows = x.shape[0]
    if rows <= size:
        return run(x, state, *per_row, **options)
    parts = [run(x[a:a + size], state[a:a + size],
                 *(None if v is None else v[a:a + size] for v in per_row), **options)
             for a in range(0, rows, size)]
    return tuple(np.concatenate(p) for p in zip(*parts))


def state_uniforms(state, max_steps, draws):
    """The uniforms of a step from the packed states' random columns.

    Args:
        state: float32 array `(B, S + 4)`.
        max_steps, draws: the step's `max_steps` and `draws_per_step`.

    Returns:
        float32 `(B, max_steps * draws)`: `randomness.uniforms` at each
        row's seed and position.
    """
    cols = np.asarray(state)[:, -RANDOM_COLUMNS:]
    if cols.shape[0] == 1:  # a lone stream: no array arithmetic
        halves = [int(v) for v in cols[0].tolist()]
        if all(0 <= v <= 0xFFFF for v in halves):
            return _LOOKAHEAD.row((halves[0] << 16) | halves[1], (halves[2] << 16) | halves[3],
                                  max_steps * draws)
    cols = cols.astype(np.int64)
    if cols.size and (cols.min() < 0 or cols.max() > 0xFFFF):  # not 16-bit halves
        return randomness.uniforms((cols[:, 0] << 16) | cols[:, 1],
                                   (cols[:, 2] << 16) | cols[:, 3], max_steps * draws)
    seeds = (cols[:, 0] << 16) | cols[:, 1]
    positions = (cols[:, 2] << 16) | cols[:, 3]
    # A stream steps position by position: its next draws come from one
    # call drawn ahead (`randomness.Lookahead`), the same numbers.
    return _LOOKAHEAD.uniforms(seeds, positions, max_steps * draws)


_LOOKAHEAD = randomness.Lookahead()


def check_params(params, rows, frame_loss):
    """`params=` of a step: `None` or float32 `(rows, 4)` of valid sampler
    rows (greedy 0/1, temperature > 0, k >= 0, p in (0, 1]), and only
    greedy rows on `mse` / `mae` frames."""
    if params is None:
        return None
    array = checks.as_float32(params, "params", f"a float array of shape ({rows}, 4)")
    if array.shape != (rows, samplers.PARAMS):
        raise ValueError(
            "Received an invalid value for argument `params`, expected a float "
            f"array of shape ({rows}, 4), got shape {array.shape}.")
    greedy, temperature, k, p = array.T
    ok = (np.isin(greedy, (0.0, 1.0)) & np.isfinite(temperature) & (temperature > 0)
          & (k >= 0) & (k == np.floor(k)) & (p > 0) & (p <= 1))
    if not ok.all():
        raise ValueError(
            "Received an invalid value for argument `params`, expected rows "
            "[greedy (0 or 1), temperature > 0, k >= 0, 0 < p <= 1] "
            f"(samplers.row_params), got {array[~ok][0].tolist()!r}.")
    if frame_loss not in samplers.SAMPLED_KINDS and (greedy == 0).any():
        samplers.check_applies(samplers.Random(), frame_loss)  # raises, naming the kind
    return array


def pack_nest(state, sizes):
    """A state nest (with or without `"random"`) -> packed `(B, S + 4)`."""
    if isinstance(state, dict) and "random" in state:
        restored, _ = checks.check_state(state, {**sizes, "random": [RANDOM_COLUMNS]})
        randomness.decode(restored["random"][0])  # integers in [0, 2**16)
    else:
        restored, batch = checks.check_state(state, sizes)
        restored["random"] = [np.zeros((batch or 0, RANDOM_COLUMNS), np.float32)]
    parts = restored["outer"] + restored["inner"] + restored["random"]
    return np.concatenate(parts, axis=1)


def unpack_nest(packed, sizes):
    """Packed `(B, S + 4)` -> `{"outer": [...], "inner": [...], "random":
    [(B, 4)]}` (copies)."""
    packed = np.asarray(packed, np.float32)
    offsets = np.cumsum([0] + list(sizes["outer"]) + list(sizes["inner"]) + [RANDOM_COLUMNS])
    parts = [packed[:, a:b].copy() for a, b in zip(offsets[:-1], offsets[1:])]
    outer = len(sizes["outer"])
    return {"outer": parts[:outer], "inner": parts[outer:-1], "random": parts[-1:]}


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


def _stepped_sequences(runtime, x, steps, seeds=None):
    """Steps the runtime over time; rows leave the batch when they end."""
    batch, time_steps = x.shape[:2]
    order = np.argsort(-steps, kind="stable")  # longest first: active rows are a prefix
    ordered_steps = steps[order]
    frames = np.zeros((batch, time_steps, runtime.trained_max_steps, runtime.output_size),
                      np.float32)
    lengths = np.zeros((batch, time_steps), np.int32)
    seeds = np.zeros(batch, np.int64) if seeds is None else np.asarray(seeds, np.int64)
    state = runtime.initial_state(batch, seeds=seeds[order])
    xs = x[order]  # (B, T, I), longest first
    for t in range(time_steps):
        active = int(np.count_nonzero(ordered_steps > t))
        if not active:
            break
        f, n, state[:active] = runtime.run(xs[:active, t], state[:active])
        frames[order[:active], t] = f
        lengths[order[:active], t] = n
    return frames, lengths


def _forced_sequences(runtime, x, steps, lengths, seeds=None):
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
    state = runtime.initial_state(batch, seeds=seeds)  # a sampler still draws frames
    for t in range(int(steps.max()) if batch else 0):
        caps = np.minimum(forced[:, t] + 1, cap).astype(np.int32)  # the STOP step runs
        frames[:, t], _, state = runtime.run(x[:, t], state, thresholds=thresholds, caps=caps)
    emitted = np.arange(cap)[None, None, :] < forced[..., None]  # drop the STOP frame
    frames[~emitted] = 0.0
    return frames, forced
