"""Counter-based randomness: Philox4x32-10 known answers, reproducibility,
row independence, and the float32 state encoding."""

import numpy as np
import pytest

from streamgen import randomness

# Random123 tests/kat_vectors, the three "philox4x32 10" lines:
# counter[4], key[2], result[4].
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
]


def test_philox_known_answers():
    counters, keys, results = (np.array(c, np.uint64) for c in zip(*KAT))
    np.testing.assert_array_equal(randomness.philox4x32(counters, keys), results)


def test_philox_is_a_scalar_loop_vectorised():
    """The vectorised block function equals a plain one-block-at-a-time loop."""
    def one(counter, key):
        c, k = list(counter), list(key)
        for r in range(10):
            if r:
                k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
            p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
            c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k[1],
                 p0 & 0xFFFFFFFF]
        return c
    rng = np.random.default_rng(0)
    counters = rng.integers(0, 2**32, size=(20, 4), dtype=np.uint64)
    keys = rng.integers(0, 2**32, size=(20, 2), dtype=np.uint64)
    expected = [one([int(v) for v in c], [int(v) for v in k]) for c, k in zip(counters, keys)]
    np.testing.assert_array_equal(randomness.philox4x32(counters, keys), expected)


def test_uniforms_are_strictly_inside_and_reproducible():
    seeds = np.arange(64)
    positions = np.arange(64) * 7
    u = randomness.uniforms(seeds, positions, 50)
    assert u.dtype == np.float32 and u.shape == (64, 50)
    assert u.min() > 0 and u.max() < 1
    assert np.isfinite(np.log(u)).all() and np.isfinite(np.log1p(-u)).all()
    np.testing.assert_array_equal(u, randomness.uniforms(seeds, positions, 50))
    # Extremes of the word -> float map.
    ends = randomness.to_unit(np.array([0, 2**32 - 1], np.uint32))
    assert 0 < ends[0] and ends[1] < 1
    # Roughly uniform: 3200 draws, mean 0.5 +- 0.02, each decile 10% +- 2%.
    assert abs(u.mean() - 0.5) < 0.02
    counts = np.histogram(u, bins=10, range=(0, 1))[0] / u.size
    assert np.abs(counts - 0.1).max() < 0.02


def test_rows_are_independent_and_columns_are_prefixes():
    seeds = np.array([5, 9, 5, 123456789])
    positions = np.array([3, 3, 4, 2**32 + 3])
    u = randomness.uniforms(seeds, positions, 10)
    for b in range(4):
        np.testing.assert_array_equal(u[b], randomness.uniforms(seeds[b:b + 1], positions[b:b + 1], 10)[0])
    np.testing.assert_array_equal(u[:, :3], randomness.uniforms(seeds, positions, 3))
    # Two seeds differ, two positions differ, positions wrap at 2**32.
    assert (u[0] != u[1]).all() and (u[0] != u[2]).all()
    np.testing.assert_array_equal(u[3], randomness.uniforms([123456789], [3], 10)[0])


def test_seed_checks_and_new_seed():
    assert randomness.check_seed("seed", 2**32 - 1) == 2**32 - 1
    for bad in (-1, 2**32, 1.5, True, "3"):
        with pytest.raises(ValueError, match="argument `seed`.*got"):
            randomness.check_seed("seed", bad)
    seeds = {randomness.new_seed() for _ in range(20)}
    assert len(seeds) > 15 and all(0 <= s < randomness.SEED_LIMIT for s in seeds)
    with pytest.raises(ValueError, match="argument `seeds`"):
        randomness.uniforms([2**32], [0], 2)
    with pytest.raises(ValueError, match="argument `positions`"):
        randomness.uniforms([1, 2], [0], 2)


def test_derive_seed():
    a = [randomness.derive_seed(7, n) for n in range(100)]
    assert len(set(a)) == 100 and all(0 <= s < 2**32 for s in a)
    assert a == [randomness.derive_seed(7, n) for n in range(100)]
    assert a[0] == 7  # key 0 keeps the seed: a lone stream seeded 7 is record 0
    assert randomness.derive_seed(8, 1) != a[1]
    assert randomness.derive_seeds(7, 100).tolist() == a  # the vectorised form
    assert randomness.derive_seeds(7, 0).shape == (0,)
    assert randomness.derive_seeds(7, 1).tolist() == [7]  # one row: no block drawn
    assert randomness.derive_seeds(2**32 - 1, 2).tolist() == [
        2**32 - 1, randomness.derive_seed(2**32 - 1, 1)]
    assert randomness.derive_seed(7, "0") != a[0]  # ids and indices never collide
    assert randomness.derive_seed(7, "rec-a") == randomness.derive_seed(7, "rec-a")
    assert randomness.derive_seed(7, "rec-a") != randomness.derive_seed(7, "rec-b")
    with pytest.raises(ValueError, match="argument `key`"):
        randomness.derive_seed(7, -1)


def test_encode_decode_is_exact():
    seeds = np.array([0, 1, 65535, 65536, 2**32 - 1, 3141592653])
    positions = np.array([0, 2**16 - 1, 2**16, 2**32 - 1, 2**32 + 7, 12345])
    cols = randomness.encode(seeds, positions)
    assert cols.dtype == np.float32 and cols.shape == (6, 4)
    got_seeds, got_positions = randomness.decode(cols)
    np.testing.assert_array_equal(got_seeds, seeds)
    np.testing.assert_array_equal(got_positions, positions % 2**32)
    with pytest.raises(ValueError, match="argument `cols`"):
        randomness.decode(cols + 0.5)


@pytest.mark.parametrize("rows", [1, 3, 40])
def test_lookahead_gives_the_same_numbers(rows):
    """Drawn ahead or not, the numbers are `uniforms`', bit for bit: stepping
    position by position (across the 2**32 wrap), jumping back and ahead
    (cache misses), and another n or seeds."""
    from streamgen.runtimes.base import state_uniforms

    ahead = randomness.Lookahead(rows=64, entries=4)
    seeds = np.arange(rows, dtype=np.int64) * 7919 + 3
    start = np.full(rows, 2**32 - 5, np.int64) - np.arange(rows)
    walk = list(range(12)) + [3, 2, 40, 41, 200] + list(range(100, 170))
    for t in walk:
        positions = (start + t) % 2**32
        expected = randomness.uniforms(seeds, positions, 18)
        got = ahead.uniforms(seeds, positions, 18)
        np.testing.assert_array_equal(got, expected)
        assert got.shape == (rows, 18) and got.dtype == np.float32
        state = np.zeros((rows, 6), np.float32)
        state[:, -4:] = randomness.encode(seeds, positions)
        np.testing.assert_array_equal(state_uniforms(state, 9, 2), expected)
    np.testing.assert_array_equal(ahead.uniforms(seeds + 1, start, 5),
                                  randomness.uniforms(seeds + 1, start, 5))
    if rows <= 32:  # drawn ahead: a read-only view of the block
        assert not ahead.uniforms(seeds, start, 18).flags.writeable
