"""Writes the bundled synthetic task: train.jsonl, valid.jsonl, inputs.txt.

Run `python samples/make_samples.py` (numpy + stdlib only; the output is
the same on every run). See samples/README.md for the task.

Every outer step i has an input x[i] = (a, b, c):

- a = (k + u) / 9, k in {0..9} (uniform), u ~ U(-0.15, 0.15): the length level.
- b = m / 2 + v, m in {-2, 0, +2} (uniform), v ~ U(-0.1, 0.1): a modifier
  that changes the length of the NEXT step.
- c ~ U(-1, 1): where the stroke starts (angle pi * c).

Out[i] has L[i] = clip(k[i] + m[i-1], 0, 9) frames (m[-1] = 0), and frame j is
a point on an arc: r * (cos(theta_j), sin(theta_j)) with r = 0.4 + 0.6 * a,
theta_j = pi * c + w * j, w = 0.25 + 0.15 * b (radians per inner step).
"""

import argparse
import json
import math
import os

import numpy as np

INPUT_SIZE, OUTPUT_SIZE, MAX_STEPS = 3, 2, 9
DECIMALS = 4
SEED = 2024


def make_sequence(rng, steps):
    """One sequence: `(x, y)` with x `(steps, 3)` and y a list of `(L, 2)` arrays."""
    k = rng.integers(0, MAX_STEPS + 1, steps)
    m = rng.choice([-2, 0, 2], steps)
    a = (k + rng.uniform(-0.15, 0.15, steps)) / MAX_STEPS
    b = m / 2 + rng.uniform(-0.1, 0.1, steps)
    c = rng.uniform(-1.0, 1.0, steps)
    x = np.round(np.stack([a, b, c], axis=1), DECIMALS)
    a, b, c = x.T  # Frames follow the rounded inputs exactly.
    previous_m = np.concatenate([[0], m[:-1]])
    lengths = np.clip(k + previous_m, 0, MAX_STEPS)
    y = []
    for i, n in enumerate(lengths):
        theta = math.pi * c[i] + (0.25 + 0.15 * b[i]) * np.arange(n)
        r = 0.4 + 0.6 * a[i]
        y.append(np.round(r * np.stack([np.cos(theta), np.sin(theta)], axis=1), DECIMALS))
    return x, y


def _num(v):
    return repr(round(float(v), DECIMALS)).removesuffix(".0") if v != 0 else "0"


def _vector(row):
    return "[" + ",".join(_num(v) for v in row) + "]"


def write_jsonl(path, rng, count, min_steps=8, max_steps=16):
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(count):
            x, y = make_sequence(rng, int(rng.integers(min_steps, max_steps + 1)))
            xs = ",".join(_vector(r) for r in x)
            ys = ",".join("[" + ",".join(_vector(f) for f in out) + "]" for out in y)
            fh.write('{"x":[' + xs + '],"y":[' + ys + "]}\n")


def write_inputs(path, rng, count=5, steps=12):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# columns: a = length level k/9, b = next-step length modifier m/2 (-1, 0, 1), "
                 "c = stroke start angle / pi; a blank line ends a sequence\n")
        for s in range(count):
            if s:
                fh.write("\n")
            x, _ = make_sequence(rng, steps)
            for row in x:
                fh.write(" ".join(f"{v:.{DECIMALS}f}" for v in row) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="folder to write into (default: the samples folder)")
    parser.add_argument("--train", type=int, default=2000, help="training sequences")
    parser.add_argument("--valid", type=int, default=300, help="validation sequences")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for i, (name, count) in enumerate([("train.jsonl", args.train), ("valid.jsonl", args.valid)]):
        write_jsonl(os.path.join(args.out, name), np.random.default_rng([SEED, i]), count)
    write_inputs(os.path.join(args.out, "inputs.txt"), np.random.default_rng([SEED, 2]))


if __name__ == "__main__":
    main()
