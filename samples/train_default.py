"""Trains the bundled default model, `streamgen/default_model.keras`.

Run from the repository root (a few minutes on 2 CPU cores):

    python samples/train_default.py

It trains a `sg.StreamGen` on `samples/train.jsonl` with teacher forcing
(seeded: the same figures on every run on the same machine), keeps the
weights of the best validation loss, saves the model without optimizer
state, reloads the saved file and prints `sg.evaluate` on
`samples/valid.jsonl`.
"""

import argparse
import json
import os
import time

os.environ.setdefault("STREAMGEN_QUIET_TF", "1")  # before TensorFlow's import
import streamgen as sg  # noqa: E402  (first: it quiets TensorFlow's import)
from streamgen.saving import save_model  # noqa: E402

import keras  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The shipped model's hyperparameters.
MODEL = dict(
    input_size=3,
    output_size=2,
    ir_size=24,
    units=48,
    cell="gru",
    max_steps=9,
    decoder_state="reset",
    frame_loss="mse",
    stop_loss_weight=1.0,
    stop_pos_weight=1.0,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default=os.path.join(HERE, "train.jsonl"))
    parser.add_argument("--valid", default=os.path.join(HERE, "valid.jsonl"))
    parser.add_argument("--out", default=os.path.join(ROOT, "streamgen", "default_model.keras"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--units", type=int, default=MODEL["units"])
    parser.add_argument("--ir-size", type=int, default=MODEL["ir_size"])
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    options = dict(MODEL, units=args.units, ir_size=args.ir_size)
    max_steps = options["max_steps"]
    train_inputs, train_targets = sg.load_jsonl(args.train, max_steps=max_steps)
    valid_inputs, valid_targets = sg.load_jsonl(args.valid, max_steps=max_steps)
    train = sg.make_dataset(train_inputs, train_targets, args.batch_size,
                            seed=args.seed, max_steps=max_steps)
    valid = sg.make_dataset(valid_inputs, valid_targets, 256, shuffle=False,
                            max_steps=max_steps)

    model = sg.StreamGen(**options)
    steps = args.epochs * len(train)
    schedule = keras.optimizers.schedules.CosineDecay(
        args.learning_rate, decay_steps=steps, alpha=0.05
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0))
    start = time.time()
    model.fit(
        train,
        validation_data=valid,
        epochs=args.epochs,
        shuffle=False,  # the dataset shuffles itself
        verbose=2,
        callbacks=[keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=args.patience, restore_best_weights=True
        )],
    )
    seconds = time.time() - start

    # Save a fresh copy: no optimizer state, a smaller file.
    clean = sg.StreamGen.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    save_model(clean, args.out)  # atomic: never a half-written file

    reloaded = keras.models.load_model(args.out, compile=False)
    figures = sg.evaluate(reloaded, valid_inputs, valid_targets)
    print(json.dumps({
        "file": os.path.relpath(args.out, ROOT),
        "bytes": os.path.getsize(args.out),
        "train_seconds": round(seconds, 1),
        "model": options,
        "evaluate_valid": {k: round(v, 6) for k, v in figures.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
