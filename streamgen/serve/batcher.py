"""Cross-stream batching: a replica's table of states and its batched step.

Pure (numpy and asyncio; no Ray): tested on its own.

- `StateTable`: every stream of a replica is one row of a few arrays — its
  packed state `(S,)` (ending with its seed and random position), its stop
  thresholds `(K,)` (any mix of built-in criteria: see
  `streamgen.criteria`), its cap, its sampler parameters `(4,)`
  (`samplers.row_params`), its seed, when it was last used — not an
  object per stream. Rows are reused after a stream closes.
- `Batcher.run(steps)`: the ready steps of any streams (rows), concatenated
  into ONE `runtime.step` (or a few, of at most `max_batch_size` rows), the
  results split back per stream and the new states written to the table.
  Equal to stepping each stream alone: every row of `runtime.step` is
  independent, with its own thresholds, cap, sampler and random numbers
  (drawn from its own seed and position).
- `TickLoop`: the asyncio side: connections `submit` their steps; one loop
  gathers everything submitted (waiting up to `batch_wait_ms` for more),
  runs `Batcher` in a worker thread so the event loop keeps reading
  messages, and resolves each connection's future.
"""

import asyncio
import time

import numpy as np

from streamgen import checks
from streamgen import randomness
from streamgen.runtimes.base import in_chunks


class LimitError(ValueError):
    """A stream that cannot be opened: the replica holds `max_streams`."""


class StepError(ValueError):
    """A step refused for one stream (its state is kept); said to the client."""


class StateTable:
    """The states and settings of all streams of a replica, one row each.

    Args:
        runtime: the `sg.Runtime` that steps the rows.
        max_streams: the most rows in use at once.
        capacity: rows allocated up front (the arrays double as needed).

    Attributes:
        states: float32 `(capacity, S)`, packed states.
        thresholds: float32 `(capacity, K)`, each row's stop thresholds
            (`runtime.options`: any built-in criteria per row).
        caps: int32 `(capacity,)`, each row's cap.
        params: float32 `(capacity, 4)`, each row's sampler parameters
            (`runtime.sampler_params`).
        seeds: int64 `(capacity,)`, each row's seed: a fresh or reset row
            starts from it at random position 0.
        sampling: bool `(capacity,)`, whether each row reads random numbers
            (`runtime.samples` of its thresholds and parameters).
        sampling_rows: int, how many rows in use sample: with none, a
            tick is not tested row by row (`Batcher.gather`).
        last_used: float64 `(capacity,)`, `time.monotonic()` of each row's
            last request.
        owners: `row -> (session, id)` for the rows in use.
    """

    def __init__(self, runtime, max_streams=100_000, capacity=64):
        self.runtime = runtime
        self.max_streams = checks.positive_int("max_streams", max_streams)
        capacity = max(1, min(capacity, self.max_streams))
        self.states = np.zeros((capacity, runtime.state_size), np.float32)
        self.thresholds = np.zeros((capacity, len(runtime.thresholds)), np.float32)
        self.caps = np.zeros((capacity,), np.int32)
        self.params = np.zeros((capacity, len(runtime.params)), np.float32)
        self.seeds = np.zeros((capacity,), np.int64)
        self.sampling = np.zeros((capacity,), bool)
        self.sampling_rows = 0
        self.last_used = np.zeros((capacity,), np.float64)
        self.generations = np.zeros((capacity,), np.int64)  # +1 per allocation
        self.owners = {}
        self._free = list(range(capacity - 1, -1, -1))  # a stack: low rows first

    def __len__(self):
        return len(self.owners)

    def allocate(self, owner, thresholds, cap, now=None, params=None, seed=None):
        """A fresh row (zero state at `seed`) with these settings.

        Args:
            owner: what to tell when the row expires: `(session, id)`.
            thresholds: float32 `(K,)`; cap: int.
            now: the time of its allocation (`time.monotonic()` if `None`).
            params: float32 `(4,)`, the row's sampler parameters
                (`runtime.sampler_params`); `None`: the runtime's sampler.
            seed: int in `[0, 2**32)`, the row's seed; `None` draws a
                fresh one (`randomness.new_seed()`).

        Raises:
            LimitError: the table holds `max_streams` rows.
        """
        if len(self.owners) >= self.max_streams:
            raise LimitError(
                f"this server replica holds its maximum of {self.max_streams} "
                "streams (--max-streams); close some streams first")
        if not self._free:
            self._grow()
        row = self._free.pop()
        self.owners[row] = owner
        self.configure(row, thresholds, cap, params, seed)
        self.reset(row)
        self.generations[row] += 1
        self.last_used[row] = time.monotonic() if now is None else now
        return row

    def configure(self, row, thresholds, cap, params=None, seed=None):
        """Sets a row's stop thresholds, cap, sampler parameters and seed
        (`None`: the runtime's sampler, a fresh seed); the state is kept."""
        self.thresholds[row] = thresholds
        self.caps[row] = cap
        self.params[row] = self.runtime.params if params is None else params
        self.seeds[row] = randomness.new_seed() if seed is None else seed
        samples = self.runtime.samples(self.thresholds[row:row + 1], self.params[row:row + 1])
        self.sampling_rows += int(samples) - int(self.sampling[row])
        self.sampling[row] = samples

    def reset(self, row):
        """Returns a row to its initial state: zeros, at its seed, position 0."""
        self.states[row] = self.runtime.initial_state(1, seeds=int(self.seeds[row]))[0]

    def release(self, row):
        """Frees a row."""
        if self.owners.pop(row, None) is not None:
            self.sampling_rows -= int(self.sampling[row])
            self.sampling[row] = False
            self._free.append(row)

    def expired(self, timeout, now=None):
        """The rows idle for more than `timeout` seconds, as `[(row, owner)]`."""
        now = time.monotonic() if now is None else now
        rows = [row for row in self.owners if now - self.last_used[row] > timeout]
        return [(row, self.owners[row]) for row in rows]

    def _grow(self):
        old = len(self.states)
        new = min(2 * old, max(old + 1, self.max_streams))
        for name in ("states", "thresholds", "caps", "params", "seeds", "sampling",
                     "last_used", "generations"):
            array = getattr(self, name)
            grown = np.zeros((new,) + array.shape[1:], array.dtype)
            grown[:old] = array
            setattr(self, name, grown)
        self._free.extend(range(new - 1, old - 1, -1))


class _Rows(np.ndarray):
    """Row indices `(B,)` that remember the rows' generations, and whether
    any of them samples (`None`: not known)."""

    def __new__(cls, rows, generations, samples=None):
        array = np.asarray(rows).view(cls)
        array.generations = generations
        array.samples = samples
        return array


class Batcher:
    """Steps any set of table rows with one `runtime.step` per chunk.

    Args:
        table: a `StateTable`.
        max_batch_size: the most rows of one `runtime.step` call (1 turns
            batching off: one call per stream step).

    Example:

    >>> from streamgen.serve.batcher import Batcher, StateTable
    >>> runtime = sg.open_runtime(model)
    >>> table = StateTable(runtime)
    >>> a = table.allocate(("s", "a"), *runtime.options())
    >>> b = table.allocate(("s", "b"), *runtime.options(max_steps=3))
    >>> x_a, x_b = np.zeros(3, "float32"), np.ones(3, "float32")
    >>> outs = Batcher(table).run([(a, x_a), (b, x_b)])   # one runtime.step
    >>> [out.shape[1] for out in outs], len(outs[1]) <= 3
    ([2, 2], True)
    """

    def __init__(self, table, max_batch_size=1024):
        self.table = table
        self.runtime = table.runtime
        self.max_batch_size = checks.positive_int("max_batch_size", max_batch_size)

    def gather(self, steps):
        """The arguments of `runtime.step` for `steps`, a list of `(row, x)`.

        Rows must be distinct. `x` is a float32 `(input_size,)` array, or a
        checked list of `input_size` finite numbers (see `session`).

        Returns:
            `(rows, x, state, thresholds, caps, params)`: int `(B,)`,
            float32 `(B, I)`, `(B, S)`, `(B, K)`, int32 `(B,)`, float32
            `(B, 4)` (copies). `rows`
            also carries each row's generation (`rows.generations`), so
            that `scatter` skips a row that was closed and reused meanwhile,
            and `rows.samples`: False when no row of the table samples
            (`step` then skips `runtime.samples`'s test).
        """
        rows = np.fromiter((row for row, _ in steps), np.int64, len(steps))
        x = np.array([x for _, x in steps], np.float32) if steps else np.zeros(
            (0, self.runtime.input_size), np.float32)
        table = self.table
        rows = _Rows(rows, table.generations[rows], False if table.sampling_rows == 0 else None)
        return (rows, x, table.states[rows], table.thresholds[rows], table.caps[rows],
                table.params[rows])

    def scatter(self, rows, result):
        """Writes the new states back; returns each row's `Out[i]` `(L, O)`.

        A row whose new state is not finite (a finite state can overflow
        float32) keeps its old state, and its `Out[i]` is a `StepError`.
        """
        frames, lengths, new_state = result
        # One sum tells that every value is finite (a NaN or an infinity
        # makes it non-finite; a sum that overflows only sends us to the
        # row-by-row test): a third of the cost of `isfinite(...).all(axis=1)`
        # at 256 rows. (Silent: an overflowing sum is no news to the operator.)
        with np.errstate(over="ignore", invalid="ignore"):
            total = new_state.sum()
        finite = None if np.isfinite(total) else np.isfinite(new_state).all(axis=1)
        generations = getattr(rows, "generations", None)
        reused = generations is not None and (self.table.generations[rows] != generations).any()
        if finite is None and not reused:
            self.table.states[rows] = new_state
        else:  # an overflow, or a row closed (and maybe reused) while it was stepped
            keep = np.ones(len(rows), bool) if finite is None else finite
            if reused:
                keep &= self.table.generations[rows] == generations
            self.table.states[rows[keep]] = new_state[keep]
        outs = [frames[b, :length] for b, length in enumerate(lengths.tolist())]
        if finite is not None:
            for b in np.flatnonzero(~finite).tolist():
                outs[b] = StepError(
                    "this step would overflow the stream's state (float32); the state before "
                    "it is kept: reset() or set_state() another one")
        return outs

    def step(self, rows, x, state, thresholds, caps, params=None):
        """`runtime.run` in chunks of `max_batch_size` rows (no table access):
        one call for rows of any mix of stop criteria, caps and samplers."""
        return in_chunks(self.runtime.run, self.max_batch_size, x, state, None, thresholds, caps,
                         params, samples=getattr(rows, "samples", None))

    def run(self, steps):
        """Steps `[(row, x), ...]` (distinct rows); returns their `Out[i]`s."""
        if not steps:
            return []
        rows, *arguments = self.gather(steps)
        return self.scatter(rows, self.step(rows, *arguments))


class TickLoop:
    """Gathers the steps of all connections into batched ticks (asyncio).

    Each `submit` call hands in the steps of one connection (distinct rows)
    and waits for their outputs. A single task runs the ticks: it takes
    everything submitted so far (up to `tick_rows` rows), optionally waits
    `batch_wait_ms` for more, gathers on the event loop, runs the step in
    `executor` (a thread: the event loop keeps receiving), and scatters.

    A tick of more rows than the batcher's `max_batch_size` is stepped in
    several `runtime.step` calls of at most that many rows, in one trip to
    the thread: with batching off (`max_batch_size=1`) every stream step
    still has a call of its own, and the hand-off to the thread and back
    (tens of microseconds, more than a one-row LiteRT step) is paid once
    per tick instead of once per step.

    Args:
        batcher: a `Batcher`.
        batch_wait_ms: how long a tick waits for more steps once one is
            ready (0: none; steps that arrive while a tick runs join the
            next one anyway).
        executor: a `concurrent.futures.Executor` for the step; `None`
            runs it on the event loop.
        tick_rows: the most rows of one tick; `None`: the batcher's
            `max_batch_size`, or `MIN_TICK_ROWS` if that is smaller.
    """

    MIN_TICK_ROWS = 64

    def __init__(self, batcher, batch_wait_ms=0.0, executor=None, tick_rows=None):
        self.batcher = batcher
        self.batch_wait = checks.non_negative_float("batch_wait_ms", batch_wait_ms) / 1000.0
        self.executor = executor
        self.tick_rows = (max(batcher.max_batch_size, self.MIN_TICK_ROWS) if tick_rows is None
                          else checks.positive_int("tick_rows", tick_rows))
        self._pending = []  # (row, x, future, index)
        self._ready = None
        self._task = None
        self.ticks = 0
        self.rows_stepped = 0

    def start(self):
        """Starts the loop on the running event loop (once)."""
        if self._task is None:
            self._ready = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, steps):
        """Steps `[(row, x), ...]` in the next tick; returns their `Out[i]`s."""
        if not steps:
            return []
        self.start()
        future = asyncio.get_running_loop().create_future()
        results = [None] * len(steps)
        counter = [len(steps)]
        for index, (row, x) in enumerate(steps):
            self._pending.append((row, x, future, results, counter, index))
        self._ready.set()
        return await future

    async def stop(self):
        """Cancels the loop (pending submissions fail)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self):
        loop = asyncio.get_running_loop()
        tick_rows = self.tick_rows
        while True:
            await self._ready.wait()
            if self.batch_wait and len(self._pending) < self.batcher.max_batch_size:
                await asyncio.sleep(self.batch_wait)
            chunk, self._pending = self._pending[:tick_rows], self._pending[tick_rows:]
            if not self._pending:
                self._ready.clear()
            # Steps of a caller that went away (its connection closed; its rows
            # may be released and reused): dropped, never stepped.
            chunk = [entry for entry in chunk if not entry[2].done()]
            if not chunk:
                continue
            try:
                rows, *arguments = self.batcher.gather([(row, x) for row, x, *_ in chunk])
                if self.executor is None:
                    result = self.batcher.step(rows, *arguments)
                else:
                    result = await loop.run_in_executor(self.executor, self.batcher.step,
                                                         rows, *arguments)
                outs = self.batcher.scatter(rows, result)
            except Exception as error:  # noqa: BLE001  (the futures carry it)
                for _, _, future, *_ in chunk:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.ticks += 1
            self.rows_stepped += len(chunk)
            for (_, _, future, results, counter, index), out in zip(chunk, outs):
                results[index] = out
                counter[0] -= 1
                if counter[0] == 0 and not future.done():
                    future.set_result(results)
