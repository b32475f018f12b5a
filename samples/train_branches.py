"""Trains an `mdn` and an `mse` model on the branching task and checks them.

Run from the repository root (about a minute per model on 2 CPU cores):

    python samples/make_branches.py      # once: writes samples/branches_*.jsonl
    python samples/train_branches.py [--out samples]

`--out DIR` saves `branches_mdn.keras` and `branches_mse.keras` there: with
`--out samples` and the defaults, the two models the repository ships
(`samples/plot_branches.py` draws docs/sampling.png from them).

For each model it draws `--draws` streams of one outer step from fresh
headings through `model.decode(..., sampler=..., stop=[sg.StopSample()],
seed=...)`, row `b` a stream of its own seed, the frames drawn from the
mixture (`sg.samplers.Random()`) or the mse frame as it is (`Greedy()`),
then prints one JSON line per model:

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

Why the mdn model's defaults are `stop_network="shared"` and
`stop_loss_weight=30` (`STOP_DEFAULTS`; the mse model keeps the separate
stop net and weight 1, which leave its frames at the mean):
the true STOP probability per inner step is 0, 0, 1/3, 1/2, 1, so the stop
head must tell step 3 (a coin flip) from step 4 (always STOP). No frame is
ever emitted at step 4, so the frame loss never shapes model_b's state
there; with a separate stop network (its input's gradient stopped) nothing
does, and the head blurs steps 3 and 4 (about 0.65 and 0.83 instead of 0.5
and 1: too many 3-frame strokes, stop loss 0.31). With the shared head the
STOP loss shapes that state, but the mixture's likelihood (scales near
their floor) gives gradients far larger than the STOP loss's, and Adam
scales each weight's step by the sum: weight 1 changes little, weight 30
lets the STOP loss in (stop loss 0.283, steps 3 and 4 at 0.53 and 0.99).
See samples/README.md for the measurements.
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

import keras  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_branches  # noqa: E402

MODEL = dict(input_size=2, output_size=2, ir_size=8, units=16, max_steps=make_branches.MAX_STEPS)
# The mdn model's STOP head needs the shared network and a heavy weight (see
# the module docstring); the mse model's frames (the point of it: the mean)
# need the STOP loss out of their way, so it keeps the separate stop net.
STOP_DEFAULTS = {
    "mdn": {"stop_network": "shared", "stop_loss_weight": 30.0},
    "mse": {"stop_network": "separate", "stop_loss_weight": 1.0},
}
DATA_LENGTHS = np.bincount(make_branches.LENGTHS, minlength=make_branches.MAX_STEPS + 1) / 3


def train(frame_loss, epochs=40, seed=1, mixtures=2, train_path=None, valid_path=None,
          stop_network=None, learning_rate=1e-2, units=16, stop_loss_weight=None):
    """A trained model and its teacher-forced validation figures (a dict).

    The seed fixes the weights' initialization and the batches' order
    (`keras.utils.set_random_seed`, `sg.make_dataset(seed=...)`).
    `stop_network` and `stop_loss_weight` default to `STOP_DEFAULTS[frame_loss]`.
    """
    stop_network = stop_network or STOP_DEFAULTS[frame_loss]["stop_network"]
    if stop_loss_weight is None:
        stop_loss_weight = STOP_DEFAULTS[frame_loss]["stop_loss_weight"]
    train_path = train_path or os.path.join(HERE, "branches_train.jsonl")
    valid_path = valid_path or os.path.join(HERE, "branches_valid.jsonl")
    keras.utils.set_random_seed(seed)
    max_steps = MODEL["max_steps"]
    model = sg.StreamGen(**dict(MODEL, units=units), frame_loss=frame_loss, mixtures=mixtures,
                         stop_network=stop_network, stop_loss_weight=stop_loss_weight)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    data = sg.load_jsonl(train_path, max_steps=max_steps)
    valid = sg.make_dataset(*sg.load_jsonl(valid_path, max_steps=max_steps), 64,
                            shuffle=False, max_steps=max_steps)
    model.fit(sg.make_dataset(*data, 32, seed=seed, max_steps=max_steps),
              epochs=epochs, verbose=0, shuffle=False)
    return model, model.evaluate(valid, verbose=0, return_dict=True)


def sample(model, x, seed=0):
    """Draws `Out[0]` for each heading of `x`, one stream (one seed) a row.

    Through the library's own sampling path: `model.decode(x[:, None],
    sampler=..., stop=[sg.StopSample()], seed=seed)`, row `b` a stream of
    seed `randomness.derive_seed(seed, b)`; mdn frames drawn by
    `sg.samplers.Random()`, mse frames the head's output (`Greedy()`).

    Args:
        model: a `sg.StreamGen` of the branching task.
        x: float array `(N, 2)`, the headings.
        seed: int.

    Returns:
        A list of `N` float arrays `(L_b, 2)`, the frames of each stream.
    """
    sampler = sg.samplers.Random() if model.frame_loss == "mdn" else sg.samplers.Greedy()
    out = model.decode(np.asarray(x, np.float32)[:, None, :], sampler=sampler,
                       stop=[sg.StopSample()], seed=seed)  # (N, 1, None, 2)
    # Split the frames by their lengths in NumPy: an eager `RaggedTensor.to_list()`
    # of this nesting slices it row by row (~8 ms a row: 2,000 rows, 15 s).
    first = out[:, 0]  # (N, None, 2): each stream's Out[0]
    frames = first.flat_values.numpy().astype(np.float32).reshape(-1, model.output_size)
    return np.split(frames, np.cumsum(first.row_lengths().numpy())[:-1])


def check(model, draws=2000, seed=0):
    """The figures of the module docstring for one model, a dict.

    `draws` headings uniform on the circle (`numpy` seeded by `seed`), one
    stream each (`sample`, seed `seed`). Besides the JSON figures,
    `"angles"` holds each stream's first-frame angle from its heading (an
    array, for the plot).
    """
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-math.pi, math.pi, draws)
    x = np.stack([np.cos(theta), np.sin(theta)], axis=1).astype(np.float32)
    strokes = sample(model, x, seed)
    lengths = np.array([len(frames) for frames in strokes])
    has = lengths > 0
    first = np.array([frames[0] for frames in strokes if len(frames)]).reshape(-1, 2)
    sides = make_branches.branch_of(x[has], first)
    angles = make_branches.angle_from_heading(x[has], first)
    histogram = np.bincount(lengths, minlength=model.max_steps + 1) / draws
    return {
        "branches": {"left": float(np.mean(sides > 0)), "right": float(np.mean(sides < 0))},
        "length_tv": float(0.5 * np.abs(histogram - DATA_LENGTHS).sum()),
        "lengths": [round(float(v), 3) for v in histogram],
        "angle": float(np.mean(np.abs(angles))),
        "angles": angles,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder to save branches_mdn.keras and "
                        "branches_mse.keras into")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1, help="training seed")
    parser.add_argument("--stop-network", choices=["shared", "separate"],
                        help="default: STOP_DEFAULTS of the model kind")
    parser.add_argument("--stop-loss-weight", type=float,
                        help="default: STOP_DEFAULTS of the model kind")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--units", type=int, default=MODEL["units"])
    parser.add_argument("--only", choices=["mdn", "mse"], help="train one model only")
    args = parser.parse_args(argv)
    for frame_loss in [args.only] if args.only else ["mdn", "mse"]:
        start = time.perf_counter()
        model, figures = train(frame_loss, args.epochs, args.seed,
                               stop_network=args.stop_network,
                               learning_rate=args.learning_rate, units=args.units,
                               stop_loss_weight=args.stop_loss_weight)
        seconds = time.perf_counter() - start
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            model.save(os.path.join(args.out, f"branches_{frame_loss}.keras"))
        result = check(model, args.draws)
        del result["angles"]
        result.update(model=frame_loss, train_seconds=round(seconds, 1),
                      stop_loss=round(figures["stop_loss"], 4),
                      frame_loss=round(figures["frame_loss"], 4))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
