"""Writes the branching task: branches_train.jsonl and branches_valid.jsonl.

Run `python samples/make_branches.py` (numpy + stdlib only; the seed is
fixed, so every run writes the same files). See samples/README.md.

A task where the conditional mean fails: for the same input, `Out[i]` goes
one of two ways at random and its length varies at random.

- Input `x[i] = (cos(theta_i), sin(theta_i))`, `theta_i` uniform in
  `[-pi, pi)`: a heading.
- Branch `s_i`: -1 or +1 with probability 1/2 each (not in the input).
- Length `L_i`: 2, 3 or 4 with probability 1/3 each (not in the input).
- Frame `j = 0 .. L_i - 1`: `0.3 * (j + 1) * (cos(phi_i), sin(phi_i))` with
  `phi_i = theta_i + s_i * ALPHA`: a straight stroke from the origin,
  turning `ALPHA` (0.6 rad) left or right of the heading.

A model of the mean (`mse`) draws the average, a shorter stroke along the
heading itself, between the branches; a mixture (`mdn`) can draw either.
"""

import argparse
import math
import os

import numpy as np

INPUT_SIZE, OUTPUT_SIZE, MAX_STEPS = 2, 2, 6
ALPHA = 0.6  # radians each branch turns from the heading
STEP = 0.3  # distance between frames
LENGTHS = (2, 3, 4)  # equally likely
DECIMALS = 4
SEED = 2026


def make_sequence(rng, steps):
    """One sequence: `(x (steps, 2), y [L_i frames (L_i, 2)], branches (steps,))`."""
    theta = rng.uniform(-math.pi, math.pi, steps)
    x = np.round(np.stack([np.cos(theta), np.sin(theta)], axis=1), DECIMALS)
    theta = np.arctan2(x[:, 1], x[:, 0])  # frames follow the rounded inputs
    branches = rng.choice([-1, 1], steps)
    lengths = rng.choice(LENGTHS, steps)
    y = []
    for i in range(steps):
        phi = theta[i] + branches[i] * ALPHA
        radius = STEP * np.arange(1, lengths[i] + 1)
        y.append(np.round(radius[:, None] * np.array([[math.cos(phi), math.sin(phi)]]),
                          DECIMALS))
    return x, y, branches


def branch_of(x, frames):
    """-1 (right of the heading) or +1 (left), per row: the sign of `x × frame`.

    Args:
        x: array `(N, 2)`, the headings.
        frames: array `(N, 2)`, a frame of each stroke (its first, say).
    """
    return np.sign(x[:, 0] * frames[:, 1] - x[:, 1] * frames[:, 0]).astype(int)


def angle_from_heading(x, frames):
    """Signed angle (radians) of each frame from its heading, in `(-pi, pi]`."""
    cross = x[:, 0] * frames[:, 1] - x[:, 1] * frames[:, 0]
    dot = x[:, 0] * frames[:, 0] + x[:, 1] * frames[:, 1]
    return np.arctan2(cross, dot)


def _num(v):
    return repr(round(float(v), DECIMALS)).removesuffix(".0") if v != 0 else "0"


def _vector(row):
    return "[" + ",".join(_num(v) for v in row) + "]"


def write_jsonl(path, rng, count, min_steps=3, max_steps=8):
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(count):
            x, y, _ = make_sequence(rng, int(rng.integers(min_steps, max_steps + 1)))
            xs = ",".join(_vector(r) for r in x)
            ys = ",".join("[" + ",".join(_vector(f) for f in out) + "]" for out in y)
            fh.write('{"x":[' + xs + '],"y":[' + ys + "]}\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="folder to write into (default: the samples folder)")
    parser.add_argument("--train", type=int, default=600, help="training sequences")
    parser.add_argument("--valid", type=int, default=100, help="validation sequences")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for i, (name, count) in enumerate([("branches_train.jsonl", args.train),
                                       ("branches_valid.jsonl", args.valid)]):
        write_jsonl(os.path.join(args.out, name), np.random.default_rng([SEED, i]), count)


if __name__ == "__main__":
    main()
