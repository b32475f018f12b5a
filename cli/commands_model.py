"""`streamgen train`, `evaluate`, `info` and `export`."""

import os

import click

from streamgen.cli import common


def _keras_path(ctx, param, value):
    """Checks an output model path: `.keras` in an existing folder."""
    if value is None:
        return value
    if os.path.splitext(value)[1].lower() != ".keras":
        raise click.BadParameter(f"{value!r} does not end in .keras.")
    folder = os.path.dirname(value) or "."
    if not os.path.isdir(folder):
        raise click.BadParameter(f"the folder {folder!r} does not exist.")
    return value


def _load_data(path, model=None, **sizes):
    """`sg.load_jsonl`, its `ValueError` as one runtime line."""
    import streamgen as sg

    if model is not None:
        sizes = dict(max_steps=model.max_steps, input_size=model.input_size,
                     output_size=model.output_size)
    try:
        return sg.load_jsonl(path, **sizes)
    except (OSError, ValueError) as error:
        message = str(error)
        raise common.CliError(
            message if message.startswith(path) else f"{path}: {message}"
        ) from None


# ---------------------------------------------------------------------- #
# train
# ---------------------------------------------------------------------- #
@click.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", required=True, metavar="OUT.keras", callback=_keras_path,
              help="Where to save the trained model (.keras).")
@click.option("--valid", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Validation JSONL; the model with the best val_loss is kept.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True),
              default=1e-3, show_default=True, help="Adam's learning rate.")
@click.option("--seed", type=int, help="Seed for weights and shuffling (repeatable runs).")
@click.option("--units", type=click.IntRange(min=1), default=64, show_default=True,
              help="Units of each recurrent cell.")
@click.option("--ir-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Width of the intermediate representation IR[i].")
@click.option("--cell", type=click.Choice(["gru", "lstm", "simple_rnn"]), default="gru",
              show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=9, show_default=True,
              help="Cap on the length of every Out[i].")
@click.option("--decoder-state", type=click.Choice(["reset", "carry"]), default="reset",
              show_default=True,
              help="model_b starts each Out[i] from IR[i] (reset) or where Out[i-1] ended (carry).")
@click.option("--frame-loss", type=click.Choice(["mse", "mae", "categorical"]),
              default="mse", show_default=True)
@click.option("--stop-pos-weight", type=click.FloatRange(min=0, min_open=True),
              default=1.0, show_default=True,
              help="Weight of the STOP class in the stop loss.")
def train(data, output, valid, epochs, batch_size, learning_rate, seed, units, ir_size,
          cell, max_steps, decoder_state, frame_loss, stop_pos_weight):
    """Train a model on DATA (JSON Lines) with teacher forcing.

    Each line of DATA is one sequence:
    {"x": [[...], ...], "y": [[[...], ...], ...]}, where y[t] holds the
    frames of Out[t] (possibly []). input_size and output_size are read
    from the data. Keras shows its progress bar; with --valid the model of
    the best validation loss is kept. Ctrl-C saves the model so far (the
    best one, with --valid) and says where (status 130).

    \b
    Example:
      streamgen train samples/train.jsonl --valid samples/valid.jsonl \\
          --epochs 20 --units 48 -o model.keras
    """
    inputs, targets = _load_data(data, max_steps=max_steps)
    input_size, output_size = inputs[0].shape[1], targets[0][0].shape[1]
    if output_size == 0:
        raise common.CliError(f"{data}: no frames at all, so output_size is unknown")
    valid_data = None
    if valid is not None:
        valid_data = _load_data(valid, max_steps=max_steps, input_size=input_size,
                                output_size=output_size)

    import keras

    import streamgen as sg

    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = sg.StreamGen(
        input_size, output_size, ir_size=ir_size, units=units, cell=cell,
        max_steps=max_steps, decoder_state=decoder_state, frame_loss=frame_loss,
        stop_pos_weight=stop_pos_weight,
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    dataset = sg.make_dataset(inputs, targets, batch_size, shuffle=True, seed=seed,
                              max_steps=max_steps, output_size=output_size)
    epochs_done = []
    callbacks = [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epochs_done.append(dict(logs or {})))]
    validation = None
    if valid_data is not None:
        validation = sg.make_dataset(*valid_data, batch_size, shuffle=False,
                                     max_steps=max_steps, output_size=output_size)
        callbacks.insert(0, keras.callbacks.ModelCheckpoint(
            output, monitor="val_loss", mode="min", save_best_only=True))
    try:
        model.fit(dataset, validation_data=validation, epochs=epochs, callbacks=callbacks,
                  shuffle=False)  # the dataset shuffles itself
    except KeyboardInterrupt:
        click.echo("")  # end the progress bar's line
        done = f"interrupted after {_epochs(len(epochs_done))}"
        if valid_data is not None and epochs_done:
            common.report(f"{done}; the best model so far ({_best(epochs_done)}) "
                          f"is in {output}")
        else:
            model.save(output)
            common.report(f"{done}; saved the model to {output}")
        raise click.exceptions.Exit(130) from None
    if valid_data is None:
        model.save(output)
        click.echo(f"saved {output} ({_epochs(len(epochs_done))}, "
                   f"loss {common.number(epochs_done[-1]['loss'])})")
    else:
        click.echo(f"saved {output}: the best of {_epochs(len(epochs_done))} "
                   f"({_best(epochs_done)})")


def _epochs(count):
    return f"{count} epoch{'' if count == 1 else 's'}"


def _best(epochs_done):
    losses = [logs.get("val_loss", float("inf")) for logs in epochs_done]
    best = min(range(len(losses)), key=losses.__getitem__)
    return f"epoch {best + 1}, val_loss {common.number(losses[best])}"


# ---------------------------------------------------------------------- #
# evaluate
# ---------------------------------------------------------------------- #
@click.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@common.model_option
@common.stop_options
def evaluate(data, model_path, stop_kind, threshold):
    """Print the metrics of a model on DATA (JSON Lines) as one JSON object.

    length_accuracy: share of outer steps whose free-running length equals
    the true one; length_mae: mean absolute length error; frame_mse: mean
    squared error of the frames with the true lengths forced (null when
    DATA has no frames). Numbers have 6 significant digits.

    \b
    Example:
      streamgen evaluate samples/valid.jsonl
      streamgen evaluate samples/valid.jsonl --model m.keras --stop head --threshold 0.7
    """
    import streamgen as sg

    model = common.load_model(model_path)
    spec = common.stop_spec(common.criteria_dicts(model.stop), stop_kind, threshold)
    inputs, targets = _load_data(data, model)
    try:
        metrics = sg.evaluate(model, inputs, targets, stop=common.stop_criteria(spec))
    except ValueError as error:
        raise common.CliError(f"{data}: {error}") from None
    click.echo(common.dumps({name: common.rounded(value) for name, value in metrics.items()}))


# ---------------------------------------------------------------------- #
# info
# ---------------------------------------------------------------------- #
@click.command()
@common.model_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(model_path, as_json):
    """Describe a model: sizes, cells, cap, decoder mode, stop criteria, size.

    \b
    Example:
      streamgen info
      streamgen info --model m.keras --json
    """
    model = common.load_model(model_path)
    facts = describe(model, model_path or "default")
    if as_json:
        click.echo(common.dumps(facts))
        return
    cell = lambda c: f"{c['class']}({c['units']})" if c["units"] else c["class"]  # noqa: E731
    rows = [
        ("model", facts["model"]),
        ("input_size", facts["input_size"]),
        ("output_size", facts["output_size"]),
        ("ir_size", facts["ir_size"] if facts["ir_size"] is not None else "none"),
        ("outer cell", cell(facts["outer_cell"])),
        ("inner cell", cell(facts["inner_cell"])),
        ("max_steps", facts["max_steps"]),
        ("decoder_state", facts["decoder_state"]),
        ("stop", ", ".join(_stop_text(c) for c in facts["stop"]) or "none (the cap alone)"),
        ("frame_loss", facts["frame_loss"]),
        ("parameters", f"{facts['parameters']:,}"),
    ]
    for name, value in rows:
        click.echo(f"{name:<15}{value}")


def describe(model, source):
    """The facts `info` prints, as a JSON-ready dict."""
    def cell(c):
        units = getattr(c, "units", None)
        return {"class": type(c).__name__, "units": int(units) if units else None}

    return {
        "model": source,
        "input_size": model.input_size,
        "output_size": model.output_size,
        "ir_size": model.ir_size,
        "outer_cell": cell(model.outer_cell),
        "inner_cell": cell(model.inner_cell),
        "max_steps": model.max_steps,
        "decoder_state": model.decoder_state,
        "stop": [{"class": type(c).__name__, **c.get_config()} for c in model.stop],
        "frame_loss": model.frame_loss,
        "parameters": int(model.count_params()),
    }


def _stop_text(criterion):
    args = ", ".join(f"{k}={v!r}" for k, v in criterion.items() if k != "class")
    return f"{criterion['class']}({args})"


# ---------------------------------------------------------------------- #
# export
# ---------------------------------------------------------------------- #
@click.command()
@common.model_option
@common.stop_options
@click.option("--format", "fmt", type=click.Choice(["litert"]), default="litert",
              show_default=True, help="Export format.")
@click.option("--output", "-o", required=True, metavar="OUT.tflite",
              help="Where to write the exported model.")
def export(model_path, stop_kind, threshold, fmt, output):
    """Export a model for serving without TensorFlow.

    litert writes a LiteRT (.tflite) file of one outer step with the state
    explicit; run it with 'streamgen stream --model OUT.tflite' (needs only
    numpy and ai-edge-litert). The kinds of stop criteria are fixed in the
    file (--stop picks them; default: the model's); their thresholds can
    still be changed when streaming.

    \b
    Example:
      streamgen export --format litert -o model.tflite
      streamgen stream --model model.tflite < samples/inputs.txt
    """
    if os.path.splitext(output)[1].lower() != ".tflite":
        raise common.bad_value("output", f"{output!r} does not end in .tflite.")
    folder = os.path.dirname(output) or "."
    if not os.path.isdir(folder):
        raise common.bad_value("output", f"the folder {folder!r} does not exist.")
    model = common.load_model(model_path)
    spec = common.stop_spec(common.criteria_dicts(model.stop), stop_kind, threshold)
    try:
        model.export_litert(output, stop=common.stop_criteria(spec))
    except ImportError as error:
        raise common.CliError(str(error)) from None
    except (OSError, ValueError, RuntimeError) as error:
        raise common.CliError(f"{output}: export failed: {error}") from None
    click.echo(f"wrote {output} ({os.path.getsize(output):,} bytes)")
