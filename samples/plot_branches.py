"""Draws docs/sampling.png: the branching task, sampled (mdn) vs averaged (mse).

Run from the repository root (matplotlib needed: `pip install
'streamgen[plot]'`; a few seconds with the shipped models):

    python samples/plot_branches.py [--mdn PATH] [--mse PATH] [--out PNG]

It loads the two models that `python samples/train_branches.py --out
samples` writes and the repository ships (`samples/branches_mdn.keras`,
`samples/branches_mse.keras`), draws through `model.decode(...,
sampler=sg.samplers.Random(), stop=[sg.StopSample()], seed=...)` (the
mse model: `Greedy()` frames, the same sampled STOP), and plots four panels:

1. the mdn model's sampled strokes for three headings (light), over the
   two true branches (dashed) and the heading (arrow);
2. the mse model's strokes for the same headings: one stroke between the
   branches;
3. the histogram of sampled lengths of both models against the data's,
   with the total-variation distances;
4. the histogram of the first frame's angle from the heading: the data's
   two branches at +-0.6 rad, the mdn model's two modes, the mse model's
   one in between.

The figures printed (and written into the panels) are those of
`train_branches.check`: fixed seeds, 2,000 headings.
"""

import argparse
import math
import os
import sys

os.environ.setdefault("STREAMGEN_QUIET_TF", "1")  # before TensorFlow's import
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_branches  # noqa: E402
import train_branches  # noqa: E402

HEADINGS = (math.pi / 2, -math.pi / 6, 7 * math.pi / 6)  # up, right-down, left-down
COLORS = ("tab:blue", "tab:orange", "tab:green")
STROKES = 40  # sampled strokes per heading in panel 1


def _strokes(ax, model, draws_per_heading, seed, alpha, width):
    """Draws the sampled strokes of `model` for each of `HEADINGS`."""
    for k, (theta, color) in enumerate(zip(HEADINGS, COLORS)):
        heading = np.array([math.cos(theta), math.sin(theta)])
        for s in (-1, 1):  # the true branches, dashed, as long as the longest stroke
            phi = theta + s * make_branches.ALPHA
            end = make_branches.STEP * max(make_branches.LENGTHS)
            ax.plot([0, end * math.cos(phi)], [0, end * math.sin(phi)], "--",
                    color="0.55", lw=1, zorder=1)
        ax.annotate("", xy=tuple(0.45 * heading), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="->", color="black", lw=1.5), zorder=4)
        x = np.tile(heading.astype(np.float32), (draws_per_heading, 1))
        strokes = train_branches.sample(model, x, seed=seed + 1000 * k)
        for frames in strokes:
            points = np.concatenate([np.zeros((1, 2)), frames])
            ax.plot(points[:, 0], points[:, 1], "-o", color=color, alpha=alpha, lw=width,
                    ms=2.5, zorder=2)
    ax.set_aspect("equal")
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.45, 1.45)
    ax.grid(alpha=0.3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mdn", default=os.path.join(HERE, "branches_mdn.keras"))
    parser.add_argument("--mse", default=os.path.join(HERE, "branches_mse.keras"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "docs",
                                                      "sampling.png"))
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import keras

    models = {name: keras.saving.load_model(getattr(args, name)) for name in ("mdn", "mse")}
    figures = {name: train_branches.check(model, args.draws, args.seed)
               for name, model in models.items()}
    for name, result in figures.items():
        print(name, {k: result[k] for k in ("branches", "length_tv", "angle", "lengths")})

    fig, axes = plt.subplots(2, 2, figsize=(11, 10))
    mdn = figures["mdn"]
    _strokes(axes[0, 0], models["mdn"], STROKES, args.seed, alpha=0.25, width=1)
    axes[0, 0].set_title(
        f"mdn + StopSample: {STROKES} sampled strokes per heading\n"
        f"left {mdn['branches']['left']:.0%} / right {mdn['branches']['right']:.0%} "
        f"of {args.draws} draws", fontsize=10)
    _strokes(axes[0, 1], models["mse"], STROKES, args.seed, alpha=0.25, width=2)
    axes[0, 1].set_title(
        "mse + StopSample: the frames are the mean,\n"
        f"one stroke between the branches (mean |angle| {figures['mse']['angle']:.2f} rad)",
        fontsize=10)

    ax = axes[1, 0]
    lengths = np.arange(len(train_branches.DATA_LENGTHS))
    ax.bar(lengths - 0.27, train_branches.DATA_LENGTHS, 0.27, color="0.6", label="data")
    ax.bar(lengths, mdn["lengths"], 0.27, color="tab:blue",
           label=f"mdn sampled (TV {mdn['length_tv']:.3f})")
    ax.bar(lengths + 0.27, figures["mse"]["lengths"], 0.27, color="tab:red",
           label=f"mse sampled (TV {figures['mse']['length_tv']:.3f})")
    ax.set_xticks(lengths)
    ax.set_xlabel("len(Out[i]) (frames)")
    ax.set_ylabel("share of streams")
    ax.set_title(f"lengths: StopSample on {args.draws} streams vs the data", fontsize=10)
    ax.legend(fontsize=9)

    ax = axes[1, 1]
    bins = np.linspace(-1.2, 1.2, 49)
    for name, color in (("mdn", "tab:blue"), ("mse", "tab:red")):
        ax.hist(figures[name]["angles"], bins=bins, color=color, alpha=0.6,
                label=f"{name} sampled")
    for s in (-1, 1):
        ax.axvline(s * make_branches.ALPHA, color="0.3", ls="--", lw=1)
    ax.plot([], [], "--", color="0.3", label=f"data: +-{make_branches.ALPHA} rad, 50/50")
    ax.set_xlabel("angle of the first frame from the heading (rad)")
    ax.set_ylabel("streams")
    ax.set_title("the first frame: two branches (mdn) vs their mean (mse)", fontsize=10)
    ax.legend(fontsize=9)

    fig.suptitle("streamgen on samples/branches_*.jsonl: Out[i] turns 0.6 rad left or "
                 "right, with 2, 3 or 4 frames, at random", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
