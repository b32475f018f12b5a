"""Trains an `mdn` and an `mse` model on the branching task and checks them.

Run from the repository root (about a minute per model on 2 CPU cores):

    python samples/make_branches.py      # once: writes samples/branches_*.jsonl
    python samples/train_branches.py [--out DIR]

For each model it draws `--draws` streams of one outer step from fresh
headings, each stream with its own seed (`streamgen.randomness`), the
frames from the mixture (`sg.samplers.Random()`, the numpy reference
`sample_mdn_np`) or the mse frame as it is, and the STOP from
`sg.StopSample()`, then prints (one JSON line per model):

- `branches`: the share of draws whose first frame turns left / right of
  the heading (the data: 0.5 / 0.5);
- `length_tv`: the total-variation distance between the sampled lengths'
  histogram and the data's (2, 3, 4 equally likely);
- `angle`: the mean absolute angle (radians) of the first frame from the
  heading: `ALPHA` = 0.6 on either branch, ~0 for a frame between them;
- `stop_loss`: the teacher-forced STOP loss on the validation file. Its
  optimum is `ln(3) / 4 = 0.2747`: of the 4 STOP decisions a stream makes
  on average, the one at step 2 (probability 1/3) and, 2 times in 3, the
  one at step 3 (1/2) are coin flips, `H(1/3) + 2/3 H(1/2) = ln 3`.

The sampling loop is written out here (one outer step, model_b's inner
steps in a Python loop) so that it needs nothing but the model's public
pieces: `outer_update`, `inner_head_step`, `split_mixture`.
"""

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("STREAMGEN_QUIET_TF", "1")  # before TensorFlow's import
import numpy as np  # noqa: E402

import streamgen as sg  # noqa: E402  (first: it quiets TensorFlow's import)
from streamgen import randomness  # noqa: E402
from streamgen import samplers  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_branches  # noqa: E402

MODEL = dict(input_size=2, output_size=2, ir_size=8, units=16, max_steps=make_branches.MAX_STEPS)
DATA_LENGTHS = np.bincount(make_branches.LENGTHS, minlength=make_branches.MAX_STEPS + 1) / 3


def train(frame_loss, epochs=40, seed=1, mixtures=2, train_path=None, valid_path=None,
          stop_network="separate", learning_rate=1e-2, units=16):
    """A trained model and its teacher-forced validation figures."""
    train_path = train_path or os.path.join(HERE, "branches_train.jsonl")
    valid_path = valid_path or os.path.join(HERE, "branches_valid.jsonl")
    keras.utils.set_random_seed(seed)
    max_steps = MODEL["max_steps"]
    model = sg.StreamGen(**dict(MODEL, units=units), frame_loss=frame_loss, mixtures=mixtures,
                         stop_network=stop_network)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    data = sg.load_jsonl(train_path, max_steps=max_steps)
    valid = sg.make_dataset(*sg.load_jsonl(valid_path, max_steps=max_steps), 64,
                            shuffle=False, max_steps=max_steps)
    model.fit(sg.make_dataset(*data, 32, seed=seed, max_steps=max_steps),
              epochs=epochs, verbose=0, shuffle=False)
    return model, model.evaluate(valid, verbose=0, return_dict=True)


def sample_outer_step(model, x, seeds, sampler=None, stop_temperature=1.0):
    """Draws `Out[0]` for each row of `x` from a fresh state, one seed a row.

    Args:
        model: a `sg.StreamGen`.
        x: float array `(N, input_size)`.
        seeds: int array `(N,)`.
        sampler: a sampler for mdn frames (default `Random()`); mse frames
            are the head's output.
        stop_temperature: the `sg.StopSample` temperature.

    Returns:
        `(first_frames (N, D), lengths (N,))`: the first frame (zeros if
        none) and the number of frames of each row.
    """
    rows = len(x)
    sampler = samplers.get(sampler or samplers.Random())
    params = samplers.row_params(sampler, rows)
    draws = samplers.draws_per_step(model.frame_loss, model.output_size)
    stop = sg.StopSample(stop_temperature)
    zeros = model.get_initial_state(rows)
    _, ir, state = model.outer_update(tf.constant(x, tf.float32), zeros["outer"], zeros["inner"])
    previous = None
    lengths = np.zeros(rows, int)
    alive = np.ones(rows, bool)
    first = np.zeros((rows, model.output_size), np.float32)
    for step in range(model.max_steps):
        u = randomness.uniforms(seeds, np.full(rows, step), draws)  # (N, draws)
        head, stop_logit, state = model.inner_head_step(ir, previous, state)
        fired = stop.fires(None, stop_logit[:, 0], stop.temperature, u[:, 0]).numpy()
        if model.frame_loss == "mdn":
            logits, means, scales = (t.numpy() for t in model.split_mixture(head))
            frame = samplers.sample_mdn_np(logits, means, scales, params, u[:, 1], u[:, 2:])
        else:
            frame = head.numpy()
        alive &= ~fired
        if step == 0:
            first[alive] = frame[alive]
        lengths += alive
        previous = tf.constant(frame)
    return first, lengths


def check(model, draws=2000, seed=0, sampler=None):
    """The figures of the module docstring for one model, a dict."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-math.pi, math.pi, draws)
    x = np.stack([np.cos(theta), np.sin(theta)], axis=1).astype(np.float32)
    seeds = np.array([randomness.derive_seed(seed, n) for n in range(draws)])
    first, lengths = sample_outer_step(model, x, seeds, sampler)
    has = lengths > 0
    sides = make_branches.branch_of(x[has], first[has])
    histogram = np.bincount(lengths, minlength=model.max_steps + 1) / draws
    return {
        "branches": {"left": float(np.mean(sides > 0)), "right": float(np.mean(sides < 0))},
        "length_tv": float(0.5 * np.abs(histogram - DATA_LENGTHS).sum()),
        "lengths": [round(float(v), 3) for v in histogram],
        "angle": float(np.mean(np.abs(make_branches.angle_from_heading(x[has], first[has])))),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder to save mdn.keras and mse.keras into")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stop-network", choices=["shared", "separate"], default="separate")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--units", type=int, default=MODEL["units"])
    parser.add_argument("--only", choices=["mdn", "mse"], help="train one model only")
    args = parser.parse_args(argv)
    for frame_loss in [args.only] if args.only else ["mdn", "mse"]:
        start = time.perf_counter()
        model, figures = train(frame_loss, args.epochs, args.seed,
                               stop_network=args.stop_network,
                               learning_rate=args.learning_rate, units=args.units)
        seconds = time.perf_counter() - start
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            model.save(os.path.join(args.out, f"{frame_loss}.keras"))
        result = check(model, args.draws)
        result.update(model=frame_loss, train_seconds=round(seconds, 1),
                      stop_loss=round(figures["stop_loss"], 4),
                      frame_loss=round(figures["frame_loss"], 4))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
