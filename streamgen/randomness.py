"""Replayable randomness: uniform numbers keyed by a seed and a position.

Every random draw of streamgen is a pure function of a stream's *seed* and
*position* (how far the stream has gone), never of a global generator. The
numbers are drawn here, in numpy, outside the compiled step, and fed to the
step as an input: TF, XLA and LiteRT then compute the same function of the
same numbers, a saved state (seed and position) replays exactly, and the
`.tflite` needs no random ops. This module imports numpy only.

The generator is **Philox4x32-10** (Salmon et al., "Parallel random numbers:
as easy as 1, 2, 3", SC 2011; the Random123 library), a counter-based
generator: a bijection of a 128-bit counter under a 64-bit key, checked
against the Random123 known-answer vectors in `tests/test_randomness.py`.
For row `b` of `uniforms(seeds, positions, n)` the key is
`(seeds[b], KEY_TAG)` and column `c` comes from word `c % 4` of the block
of counter `(positions[b], c // 4, 0, 0)`. A word `w` (uint32) becomes the
float32 `((w >> 9) + 0.5) / 2**23`, strictly inside `(0, 1)` (so `log(u)`
and `log(1 - u)` are finite) and exact in float32.

A call costs about the same for one position as for dozens (numpy's cost
per call dominates at small sizes), so a stream that steps position by
position gets its draws from a `Lookahead`, which draws the next
positions in one call: the same numbers, computed earlier.

Seeds are ints in `[0, SEED_LIMIT)`, positions ints modulo `2**32`. To keep
them in a packed float32 state, `encode` splits both into 16-bit halves,
which float32 holds exactly, and `decode` joins them back.
"""

import hashlib
import os

import numpy as np

SEED_LIMIT = 2**32
POSITION_LIMIT = 2**32
KEY_TAG = 0x5EED5EED  # the second key word of `uniforms`
_DERIVE_TAG = 0xDE41BE5D  # the second key word of `derive_seed`

_M = np.array([0xD2511F53, 0xCD9E8D57], np.uint64).reshape(2, 1, 1)
_W = np.array([0x9E3779B9, 0xBB67AE85], np.uint64).reshape(1, 2, 1, 1)
_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_ROUNDS = 10


def _philox(even, odd, key, rounds=_ROUNDS):
    """Philox4x32 on words split in two pairs, vectorised.

    `even` holds counter words `(c0, c2)` and `odd` `(c1, c3)`, as uint64
    arrays `(2, rows, blocks)`; `key` holds `(k0, k1)` as `(2, rows, 1)` (a
    key per row, broadcast over its blocks). One round multiplies both
    even words at once (`(c0, c2) * (M0, M1)`, exact in uint64), then
    `(c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)`; the key
    grows by `(W0, W1)` before every round but the first. Returns the
    result words as `(even, odd)` in the same layout.
    """
    keys = (key[None] + np.arange(rounds, dtype=np.uint64).reshape(-1, 1, 1, 1) * _W) & _MASK
    for index in range(rounds):
        product = even * _M  # (2, rows, blocks): (M0 * c0, M1 * c2)
        even = (product >> _SHIFT)[::-1] ^ odd  # (hi1 ^ c1, hi0 ^ c3)
        even ^= keys[index]
        odd = (product & _MASK)[::-1]  # (lo1, lo0)
    return even, odd


def philox4x32(counter, key, rounds=_ROUNDS):
    """The Philox4x32 block function, vectorised over rows.

    Args:
        counter: uint32-valued int array `(N, 4)`, the counters.
        key: uint32-valued int array `(N, 2)`, the keys.
        rounds: the number of rounds (10 for Philox4x32-10).

    Returns:
        A uint32 array `(N, 4)`: the random words.

    Example:

    >>> from streamgen import randomness
    >>> randomness.philox4x32(np.zeros((1, 4)), np.zeros((1, 2)))[0].tolist() == [
    ...     0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    True
    """
    counter = np.asarray(counter).astype(np.uint64).T[:, None, :]  # (4, 1, N)
    key = np.asarray(key).astype(np.uint64).T[:, None, :]  # (2, 1, N)
    even, odd = _philox(counter[0::2], counter[1::2], key, rounds)
    return np.stack([even[0, 0], odd[0, 0], even[1, 0], odd[1, 0]], axis=-1).astype(np.uint32)


def new_seed():
    """A fresh seed from the operating system's randomness, in `[0, SEED_LIMIT)`."""
    return int.from_bytes(os.urandom(4), "little")


def check_seed(name, value):
    """Validates a seed: an int in `[0, SEED_LIMIT)`; returns it as an int.

    Raises:
        ValueError: naming `name` and echoing `value`.
    """
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or not 0 <= int(value) < SEED_LIMIT:
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected an "
            f"integer in [0, 2**32), got {value!r}."
        )
    return int(value)


def _rows(name, values):
    array = np.asarray(values)
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise ValueError(
            f"Received an invalid value for argument `{name}`, expected a 1D "
            f"int array, got {values!r}."
        )
    return array.astype(np.int64)


def uniforms(seeds, positions, n):
    """Uniform float32 numbers in `(0, 1)`, one row per `(seed, position)`.

    Row `b` depends only on `seeds[b]`, `positions[b]` and the column index:
    column `c` of a wider call equals column `c` of a narrower one, and rows
    never depend on each other.

    Args:
        seeds: int array `(B,)`, each in `[0, SEED_LIMIT)`.
        positions: int array `(B,)`; taken modulo `2**32`.
        n: non-negative int, the number of columns.

    Returns:
        A float32 array `(B, n)`, every value strictly inside `(0, 1)`.

    Raises:
        ValueError: for arrays of other shapes, a seed out of range, or a
            negative `n`.

    Example:

    >>> from streamgen import randomness
    >>> u = randomness.uniforms([7, 7], [0, 1], 3)
    >>> u.shape, bool((u > 0).all() and (u < 1).all()), bool((u[0] != u[1]).any())
    ((2, 3), True, True)
    """
    seeds = _rows("seeds", seeds)
    positions = _rows("positions", positions)
    if seeds.shape != positions.shape:
        raise ValueError(
            "Received an invalid value for argument `positions`, expected "
            f"shape {seeds.shape} (one per seed), got {positions.shape}."
        )
    if seeds.size and (seeds.min() < 0 or seeds.max() >= SEED_LIMIT):
        raise ValueError(
            "Received an invalid value for argument `seeds`, expected integers "
            f"in [0, 2**32), got {seeds.tolist()!r}."
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(
            f"Received an invalid value for argument `n`, expected a "
            f"non-negative integer, got {n!r}."
        )
    rows, blocks = seeds.shape[0], -(-int(n) // 4)
    if rows == 0 or n == 0:
        return np.zeros((rows, int(n)), np.float32)
    even = np.zeros((2, rows, blocks), np.uint64)  # counter words (c0, c2)
    even[0] = (positions % POSITION_LIMIT)[:, None]
    odd = np.zeros((2, rows, blocks), np.uint64)  # counter words (c1, c3)
    odd[0] = np.arange(blocks, dtype=np.uint64)[None, :]
    key = np.empty((2, rows, 1), np.uint64)
    key[0, :, 0] = seeds
    key[1] = KEY_TAG
    even, odd = _philox(even, odd, key)
    words = np.empty((rows, blocks, 4), np.uint64)
    words[..., 0], words[..., 1], words[..., 2], words[..., 3] = even[0], odd[0], even[1], odd[1]
    words = words.reshape(rows, blocks * 4)[:, :n]
    return to_unit(words)


class Lookahead:
    """`uniforms` for streams that step position by position, drawn ahead.

    A stream (or a batch of streams stepped together) asks for its draws
    at positions `p`, `p + 1`, `p + 2`, ...: one call of `uniforms` for
    `ahead` positions at once costs about what one position costs (numpy's
    cost per call dominates at small sizes), so the next calls are slices
    of it. The numbers are those of `uniforms`, bit for bit: the cache only
    changes when they are computed. Safe to share between threads (a race
    computes a block twice, never a wrong one); the blocks are read-only.

    Args:
        rows: the most rows times positions drawn at once (`ahead` is
            `rows // B` for `B` rows; calls of more than `rows // 2` rows
            draw directly, without a cache).
        entries: the most `(seeds, n)` kept; the cache is emptied when full.

    Example:

    >>> from streamgen import randomness
    >>> ahead = randomness.Lookahead()
    >>> bool((ahead.uniforms(np.array([7]), np.array([5]), 9)
    ...       == randomness.uniforms([7], [5], 9)).all())
    True
    """

    def __init__(self, rows=64, entries=128):
        self.rows, self.entries = int(rows), int(entries)
        self._blocks = {}  # (n, seeds bytes) -> (first positions (B,), (ahead, B, n))

    def uniforms(self, seeds, positions, n):
        """`uniforms(seeds, positions, n)` (int64 arrays `(B,)`, positions in
        `[0, 2**32)`), from the cache when the rows were drawn ahead."""
        rows = seeds.shape[0]
        ahead = self.rows // max(rows, 1)
        if ahead < 2 or n > 4096:
            return uniforms(seeds, positions, n)
        if rows == 1:
            return self.row(int(seeds[0]), int(positions[0]), n)
        key = (n, seeds.tobytes())
        found = self._blocks.get(key)
        if found is not None:
            first, block = found
            offsets = positions - first
            offset = int(offsets[0])
            if 0 <= offset < ahead and (offsets == offset).all():
                return block[offset]
        # (ahead, B): positions p, p + 1, ... of each row, drawn in one call
        steps = positions[None, :] + np.arange(ahead, dtype=np.int64)[:, None]
        block = uniforms(np.broadcast_to(seeds, (ahead, rows)).reshape(-1),
                         steps.reshape(-1), n).reshape(ahead, rows, n)
        block.flags.writeable = False
        if len(self._blocks) >= self.entries:
            self._blocks.clear()
        self._blocks[key] = (positions.copy(), block)
        return block[0]

    def row(self, seed, position, n):
        """`uniforms([seed], [position], n)` for one row (Python ints, the
        position in `[0, 2**32)`): float32 `(1, n)`, read-only."""
        found = self._blocks.get((n, seed))
        if found is not None:
            offset = position - found[0]
            if 0 <= offset < self.rows:
                return found[1][offset]
        steps = np.arange(position, position + self.rows, dtype=np.int64)
        block = uniforms(np.full(self.rows, seed, np.int64), steps, n).reshape(self.rows, 1, n)
        block.flags.writeable = False
        if len(self._blocks) >= self.entries:
            self._blocks.clear()
        self._blocks[(n, seed)] = (position, block)
        return block[0]


def to_unit(words):
    """uint32 words -> float32 in `(0, 1)`: `((w >> 9) + 0.5) / 2**23`."""
    top = (np.asarray(words) >> 9).astype(np.float32)
    return (top + np.float32(0.5)) * np.float32(2.0**-23)


def derive_seed(seed, key):
    """The seed of record (or row) `key` of a run seeded with `seed`.

    `decode --seed N` gives record `n` the seed `derive_seed(N, n)` (or
    `derive_seed(N, record_id)` when records have an `"id"`), so a record's
    output does not depend on the batch size or the shards; row `b` of a
    batch seeded `N` (`model.decode`, `Runtime.initial_state`) gets the
    same. Key 0 keeps the seed itself, so the first record (or a lone
    stream) seeded `N` is the stream of seed `N` on every path. Other int
    keys and str keys never collide by construction (different counters).

    Args:
        seed: int in `[0, SEED_LIMIT)`.
        key: a non-negative int (a record index) or a str (a record id).

    Returns:
        An int in `[0, SEED_LIMIT)`.

    Raises:
        ValueError: for a bad seed or key.

    Example:

    >>> from streamgen.randomness import derive_seed
    >>> derive_seed(7, 0), derive_seed(7, 1) == derive_seed(7, 1) != 8
    (7, True)
    """
    seed = check_seed("seed", seed)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key == 0:
        return seed
    if isinstance(key, str):
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        words = [int.from_bytes(digest[i:i + 4], "little") for i in (0, 4, 8)]
        counter = [words[0], words[1], words[2], 1]
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
        if key >= 2**64:
            raise ValueError(
                "Received an invalid value for argument `key`, expected an "
                f"integer in [0, 2**64) or a str, got {key!r}."
            )
        key = int(key)
        counter = [key & 0xFFFFFFFF, key >> 32, 0, 0]
    else:
        raise ValueError(
            "Received an invalid value for argument `key`, expected a "
            f"non-negative integer (a record index) or a str (an id), got {key!r}."
        )
    words = philox4x32(np.array([counter]), np.array([[seed, _DERIVE_TAG]]))
    return int(words[0, 0])


def derive_seeds(seed, n):
    """`[derive_seed(seed, b) for b in range(n)]`, vectorised: int64 `(n,)`."""
    seed = check_seed("seed", seed)
    seeds = np.full(n, seed, np.int64)  # key 0 keeps the seed
    if n > 1:  # one row (a server's new stream) needs no block at all
        index = np.arange(1, n, dtype=np.uint64)
        counter = np.stack([index & np.uint64(0xFFFFFFFF), index >> np.uint64(32),
                            np.zeros_like(index), np.zeros_like(index)], axis=1)
        key = np.broadcast_to(np.array([seed, _DERIVE_TAG], np.uint64), (n - 1, 2))
        seeds[1:] = philox4x32(counter, key)[:, 0]
    return seeds


def encode(seeds, positions):
    """Seeds and positions as float32 columns that float32 holds exactly.

    Args:
        seeds: int array `(B,)` in `[0, SEED_LIMIT)`.
        positions: int array `(B,)`; taken modulo `2**32`.

    Returns:
        A float32 array `(B, 4)`: `[seed_hi, seed_lo, pos_hi, pos_lo]`, the
        16-bit halves of each.

    Example:

    >>> from streamgen import randomness
    >>> randomness.decode(randomness.encode([2**32 - 1], [2**32 + 5]))
    (array([4294967295]), array([5]))
    """
    seeds = _rows("seeds", seeds)
    positions = _rows("positions", positions) % POSITION_LIMIT
    if seeds.size and (seeds.min() < 0 or seeds.max() >= SEED_LIMIT):
        raise ValueError(
            "Received an invalid value for argument `seeds`, expected integers "
            f"in [0, 2**32), got {seeds.tolist()!r}."
        )
    return np.stack(
        [seeds >> 16, seeds & 0xFFFF, positions >> 16, positions & 0xFFFF], axis=-1
    ).astype(np.float32)


def decode(cols):
    """The inverse of `encode`: float32 `(B, 4)` -> `(seeds, positions)`.

    Returns:
        Two int64 arrays `(B,)`.

    Raises:
        ValueError: if `cols` is not `(B, 4)` of integers in `[0, 2**16)`.
    """
    array = np.asarray(cols, np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(
            "Received an invalid value for argument `cols`, expected an array "
            f"of shape (B, 4), got shape {array.shape}."
        )
    halves = np.rint(array)
    if not np.isfinite(array).all() or (halves != array).any() or (
            halves.size and (halves.min() < 0 or halves.max() > 0xFFFF)):
        raise ValueError(
            "Received an invalid value for argument `cols`, expected integers "
            "in [0, 65535] (16-bit halves of a seed and a position)."
        )
    halves = halves.astype(np.int64)
    return (halves[:, 0] << 16) | halves[:, 1], (halves[:, 2] << 16) | halves[:, 3]
