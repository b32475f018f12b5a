"""`streamgen train`, `evaluate`, `info` and `export`.

Model files are written atomically (`streamgen.saving`): to a temporary
file in the same folder, then moved over the target. An interrupt or a
crash leaves the previous file or the new one, never a broken one, and
every message that says where a model is names a file that was completely
written.
"""

import math
import os
import sys
import time

import click

from streamgen.cli import common

_SEED_MAX = 2**32 - 1  # `keras.utils.set_random_seed` takes [0, 2**32)


def _output_path(extension):
    """A click callback that checks an output model path before any work.

    The path must end in `extension`, must not be a folder, and its folder
    must exist and let us create a file (the temporary file of the atomic
    write is made there): checked by making and removing one now, so that
    `train` fails before the first epoch, not after the last.
    """
    def check(ctx, param, value):
        if value is None:
            return value
        shown = click.format_filename(value)
        if os.path.splitext(value)[1].lower() != extension:
            raise click.BadParameter(f"{shown!r} does not end in {extension}.")
        if os.path.isdir(value):
            raise click.BadParameter(f"{shown!r} is a folder.")
        folder = os.path.dirname(value) or "."
        if not os.path.isdir(folder):
            what = "is not a folder" if os.path.exists(folder) else "does not exist"
            raise click.BadParameter(f"the folder {click.format_filename(folder)!r} {what}.")
        import tempfile

        try:
            handle, probe = tempfile.mkstemp(prefix=".streamgen-probe.", dir=folder)
            os.close(handle)
            os.remove(probe)
        except OSError as error:
            raise click.BadParameter(
                f"cannot write in the folder {click.format_filename(folder)!r} "
                f"({error.strerror or error}).") from None
        return value

    return check


_SHUFFLE_BUFFER = 10_000  # records; `train` streams DATA through sg.jsonl_dataset


def _data_files(ctx, param, values):
    """DATA of `train`: files and glob patterns -> the list of files."""
    from streamgen.data import jsonl

    files = []
    for value in values:
        if not any(c in value for c in "*?[") and not os.path.isfile(value):
            what = "is a directory" if os.path.isdir(value) else "does not exist"
            raise click.BadParameter(f"File {value!r} {what}.")
        try:
            files.extend(jsonl.expand_paths([value]))
        except FileNotFoundError as error:
            raise click.BadParameter(str(error)) from None
    return files


def _data_widths(files, max_steps):
    """`(input_size, output_size)` from DATA's first records, or one runtime line."""
    from streamgen.data import jsonl

    try:
        widths = jsonl.peek_widths(files, max_steps=max_steps)
    except (OSError, ValueError) as error:
        raise common.CliError(str(error)) from None
    return widths.size["x"], widths.size["y"]


def _load_data(path, model=None, hint="", **sizes):
    """`sg.load_jsonl`, its `ValueError` as one runtime line.

    Args:
        model: optional, anything with `max_steps`, `input_size` and
            `output_size` (a model or a runtime): the sizes to check.
        hint: appended to a size mismatch (see `common.bundled_hint`).
    """
    import streamgen as sg

    if model is not None:
        sizes = dict(max_steps=getattr(model, "trained_max_steps", None) or model.max_steps,
                     input_size=model.input_size, output_size=model.output_size)
    try:
        return sg.load_jsonl(path, **sizes)
    except (OSError, ValueError) as error:
        message = str(error)
        if hint and ("input_size=" in message or "output_size=" in message
                     or "max_steps=" in message):
            message += hint
        raise common.CliError(
            message if message.startswith(path) else f"{path}: {message}"
        ) from None


# ---------------------------------------------------------------------- #
# train
# ---------------------------------------------------------------------- #
@click.command()
@click.argument("data", nargs=-1, metavar="DATA", callback=_data_files)
@click.option("--output", "-o", required=True, metavar="OUT.keras",
              callback=_output_path(".keras"),
              help="Where to save the trained model (.keras), written atomically.")
@click.option("--valid", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Validation JSONL; the model with the best val_loss is kept.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--learning-rate", type=common.FiniteFloat(min=0, min_open=True),
              default=1e-3, show_default=True, help="Adam's learning rate.")
@click.option("--seed", type=click.IntRange(0, _SEED_MAX),
              help="Seed for weights and shuffling (repeatable runs), in [0, 2**32).")
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
@click.option("--frame-loss", type=click.Choice(["mse", "mae", "categorical", "mdn"]),
              default="mse", show_default=True,
              help="The frames' loss: mse, mae, categorical (a softmax over output_size "
                   "classes) or mdn (a mixture of --mixtures diagonal Gaussians, "
                   "trained by negative log-likelihood; frames can then be sampled).")
@click.option("--mixtures", type=click.IntRange(min=1), default=5, show_default=True,
              help="Mixture components of --frame-loss mdn.")
@click.option("--stop", "stop_kind", type=click.Choice(common.STOP_KINDS), default="head",
              show_default=True,
              help="Stop criterion saved with the model, the default of every later "
                   "run (whose --stop overrides it): head (the learned stop head), l2 "
                   "or l2-above (STOP when ||frame|| > F), l2-below (STOP when "
                   "||frame|| < F), or none (the cap alone).")
@click.option("--threshold", type=float, metavar="F",
              help="Threshold of that criterion: a probability in [0, 1] for head "
                   "(default 0.5), a norm >= 0 for the l2 kinds (default 3.0).")
@click.option("--stop-loss-weight", type=common.FiniteFloat(min=0), default=1.0,
              show_default=True,
              help="Weight of the stop loss beside the frame loss (0: train the frames only).")
@click.option("--stop-pos-weight", type=common.FiniteFloat(min=0, min_open=True),
              default=1.0, show_default=True,
              help="Weight of the STOP class in the stop loss.")
@click.option("--patience", type=click.IntRange(min=1), metavar="N",
              help="Stop early when val_loss has not improved for N epochs (the best "
                   "model is kept). Without --valid: when the training loss has not, "
                   "and the last epoch's model is saved.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress: print only the final line.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              metavar="[ADDRESS]",
              help="Train data-parallel on a Ray cluster with Ray Train: a local one "
                   "(127.0.0.1), or the cluster at ADDRESS (auto, host:port, "
                   "ray://host:port). --batch-size stays the global batch, split over the workers.")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --ray: Ray Train workers (default 2).")
def train(data, output, valid, epochs, batch_size, learning_rate, seed, units, ir_size,
          cell, max_steps, decoder_state, frame_loss, mixtures, stop_kind, threshold,
          stop_loss_weight, stop_pos_weight, patience, quiet, ray_address, workers):
    """Train a model on DATA (JSON Lines files or glob patterns) with teacher forcing.

    DATA is streamed (never loaded whole), the files interleaved and the
    sequences shuffled through a buffer of 10,000.

    Each line of DATA is one sequence:
    {"x": [[...], ...], "y": [[[...], ...], ...]}, where y[t] holds the
    frames of Out[t] (possibly []). input_size and output_size are read
    from the data. On a terminal Keras shows its progress bar; otherwise
    (a pipe, a file) one line per epoch is written, and --quiet writes only
    the final line. With --valid the model of the best validation loss is
    kept. OUT is always written atomically: an interrupted or failed run
    leaves the previous file or a complete new one.

    Ctrl-C saves the model so far (the best one, with --valid) and says
    where (status 130). A loss that becomes NaN or infinite (a learning
    rate too high) stops training with status 1 and says what, if
    anything, was saved.

    With --ray, N workers (--workers) each stream their own share of DATA
    and train one replica; --batch-size is the global batch (a multiple of
    N, split over the workers), so a run trains like a local one. One
    line per epoch, with the records/s of all workers. A worker that dies
    is restarted and training resumes from the last epoch's checkpoint.
    See docs/training.md.

    \b
    Example:
      streamgen train samples/train.jsonl --valid samples/valid.jsonl \\
          --epochs 20 --units 48 -o model.keras
      streamgen train data.jsonl --stop l2-below --threshold 0.1 \\
          --stop-loss-weight 0 --patience 3 -o model.keras
      streamgen train data.jsonl --frame-loss mdn --mixtures 3 -o model.keras
      streamgen train samples/train.jsonl --valid samples/valid.jsonl \\
          --ray --workers 2 --epochs 3 -o model.keras
    """
    from streamgen.cli import train_ray

    data = train_ray.data_and_address(data, ray_address, workers, _data_files)
    criteria = common.stop_spec([{"class_name": "StopHead", "config": {"threshold": 0.5}}],
                                stop_kind, threshold)
    input_size, output_size = _data_widths(data, max_steps)  # DATA: files, streamed
    valid_data = None
    if valid is not None:
        valid_data = _load_data(valid, max_steps=max_steps, input_size=input_size,
                                output_size=output_size)

    if ray_address is not None:
        return train_ray.run(
            train_ray.address(ray_address), workers, data, output, valid, quiet, epochs=epochs,
            batch_size=batch_size, learning_rate=learning_rate, seed=seed, patience=patience,
            units=units, ir_size=ir_size, cell=cell, max_steps=max_steps,
            decoder_state=decoder_state, stop=criteria, frame_loss=frame_loss,
            stop_loss_weight=stop_loss_weight, stop_pos_weight=stop_pos_weight,
            mixtures=mixtures)

    import keras

    import streamgen as sg

    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = sg.StreamGen(
        input_size, output_size, ir_size=ir_size, units=units, cell=cell,
        max_steps=max_steps, decoder_state=decoder_state, stop=criteria,
        frame_loss=frame_loss, stop_loss_weight=stop_loss_weight,
        stop_pos_weight=stop_pos_weight, mixtures=mixtures,
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    dataset = sg.jsonl_dataset(data, batch_size, shuffle_buffer=_SHUFFLE_BUFFER, seed=seed,
                               max_steps=max_steps)  # widths as `_data_widths` read them
    validation = None
    if valid_data is not None:
        validation = sg.make_dataset(*valid_data, batch_size, shuffle=False,
                                     max_steps=max_steps, output_size=output_size)
    bar = not quiet and _is_terminal(sys.stdout)
    run = _Run(output, epochs, keras.callbacks.LambdaCallback)
    callbacks = [run.recorder(lines=not quiet and not bar), run.guard()]
    if valid_data is not None:
        callbacks.append(run.keep_best())
    stopper = None
    if patience is not None:
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss" if valid_data is not None else "loss", patience=patience)
        callbacks.append(stopper)
    try:
        model.fit(dataset, validation_data=validation, epochs=epochs, callbacks=callbacks,
                  shuffle=False, verbose=1 if bar else 0)  # the dataset shuffles itself
    except KeyboardInterrupt:
        if bar:
            click.echo("")  # end the progress bar's line
        run.interrupted(model)
        raise click.exceptions.Exit(130) from None
    except Exception as error:  # a malformed record, met while streaming DATA
        from streamgen.data.dataset import jsonl_error

        bad = jsonl_error(error)
        if bad is None:
            raise
        if bar:
            click.echo("")
        raise common.CliError(f"{bad}; {run.left_as_it_was()}") from None
    if run.diverged is None and not _finite_weights(model):
        run.diverged = ("weights", len(run.epochs), None)
    if run.diverged is not None:
        raise common.CliError(run.divergence_message())
    early = ""
    if stopper is not None and stopper.stopped_epoch > 0:
        early = (f"; stopped early, {stopper.monitor} had not improved for "
                 f"{_epochs(patience)}")
    if valid_data is None:
        run.save(model)
        click.echo(f"saved {output} ({_epochs(len(run.epochs))}, "
                   f"loss {common.number(run.epochs[-1]['loss'])}{early})")
    elif run.best is None:
        raise common.CliError(
            f"no epoch had a finite val_loss, so no model was saved; {run.left_as_it_was()}")
    else:
        click.echo(f"saved {output}: the best of {_epochs(len(run.epochs))} "
                   f"({run.best_text()}{early})")


class _Run:
    """The bookkeeping of one `train` run, shared by its callbacks.

    Attributes:
        epochs: the logs of every finished epoch.
        best: `(epoch, val_loss)` of the model now in OUT (with --valid),
            set only once that file is completely written.
        diverged: `None`, or `(what, epoch, batch)` where the loss (or the
            weights) stopped being finite.
    """

    def __init__(self, output, total_epochs, callback_class):
        self.output = output
        self.total_epochs = total_epochs
        self.existed = os.path.exists(output)
        self.callback_class = callback_class
        self.epochs = []
        self.best = None
        self.diverged = None
        self.epoch = 0

    def _callback(self, **hooks):
        return self.callback_class(**hooks)

    def recorder(self, lines):
        """Records each epoch's logs; with `lines`, prints one line per epoch."""
        started = {}

        def on_epoch_begin(epoch, logs=None):
            self.epoch = epoch
            started["at"] = time.monotonic()

        def on_epoch_end(epoch, logs=None):
            logs = dict(logs or {})
            self.epochs.append(logs)
            if lines:
                names = sorted(logs, key=lambda n: (n.startswith("val_"), n != "loss", n))
                values = " ".join(f"{n} {float(logs[n]):.6g}" for n in names)  # nan, inf too
                seconds = time.monotonic() - started.get("at", time.monotonic())
                click.echo(f"epoch {epoch + 1}/{self.total_epochs}: {values} ({seconds:.1f} s)")

        return self._callback(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end)

    def guard(self):
        """Stops training at the first batch whose loss is not finite."""
        def on_train_batch_end(batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and self.diverged is None and not math.isfinite(float(loss)):
                self.diverged = ("loss", self.epoch, batch)
                callback.model.stop_training = True

        callback = self._callback(on_train_batch_end=on_train_batch_end)
        return callback

    def keep_best(self):
        """Saves the model (atomically) whenever a finite val_loss improves."""
        def on_epoch_end(epoch, logs=None):
            value = (logs or {}).get("val_loss")
            if self.diverged is not None or value is None or not math.isfinite(float(value)):
                return
            if self.best is None or float(value) < self.best[1]:
                self.save(callback.model)
                self.best = (epoch, float(value))  # only once the file is complete

        callback = self._callback(on_epoch_end=on_epoch_end)
        return callback

    def save(self, model):
        """Writes OUT atomically; a disk error is one runtime line."""
        from streamgen import saving

        try:
            saving.save_model(model, self.output)
        except OSError as error:
            raise common.CliError(
                f"cannot save {self.output}: {error.strerror or error}; "
                f"{self.left_as_it_was()}") from None

    def left_as_it_was(self):
        if self.existed:
            return f"{self.output} was left as it was"
        return f"{self.output} was not written"

    def best_text(self):
        epoch, value = self.best
        return f"epoch {epoch + 1}, val_loss {common.number(value)}"

    def interrupted(self, model):
        """Ctrl-C: says what is in OUT, saving the model if nothing is yet."""
        done = f"interrupted after {_epochs(len(self.epochs))}"
        if self.best is not None:
            common.report(f"{done}; the best model so far ({self.best_text()}) "
                          f"is in {self.output}")
            return
        if self.diverged is not None or not _finite_weights(model):
            common.report(f"{done}; the loss was not finite, so nothing was saved "
                          f"({self.left_as_it_was()})")
            return
        try:
            self.save(model)
        except KeyboardInterrupt:  # a second Ctrl-C while saving
            common.report(f"{done}; interrupted again while saving, so nothing was "
                          f"saved ({self.left_as_it_was()})")
            return
        common.report(f"{done}; saved the model to {self.output}")

    def divergence_message(self):
        what, epoch, batch = self.diverged
        where = (f"the loss became NaN or infinite at epoch {epoch + 1}, batch {batch + 1}"
                 if what == "loss" else "the weights are no longer finite")
        if self.best is not None:
            saved = f"the best model before it ({self.best_text()}) is in {self.output}"
        else:
            saved = f"no model was saved ({self.left_as_it_was()})"
        return (f"training diverged: {where} (try a lower --learning-rate); {saved}")


def _finite_weights(model):
    import numpy as np

    return all(np.all(np.isfinite(w)) for w in model.get_weights())


def _is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _epochs(count):
    return f"{count} epoch{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------- #
# evaluate
# ---------------------------------------------------------------------- #
@click.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@common.model_option
@common.stop_options
@click.option("--samples", type=click.IntRange(min=1), metavar="N",
              help="Also decode DATA N times with sampling and print length_tv.")
@common.sampling_options
def evaluate(data, model_path, stop_kind, threshold, samples, sampler, seed):
    """Print the metrics of a model on DATA (JSON Lines) as one JSON object.

    length_accuracy: share of outer steps whose free-running length equals
    the true one; length_mae: mean absolute length error (both with the
    stop criteria, as when streaming). frame_mse: mean squared error of the
    frames when the true lengths are forced, so that frames align: model_b
    still feeds back its own frames (free-running), unlike val_frame_loss
    in training, which feeds back the true ones (teacher forcing) and is
    therefore lower. null when DATA has no frames. Numbers have 6
    significant digits. A .tflite export is decoded on LiteRT, without
    TensorFlow, and gives the same figures to float32 round-off.
    frame_nll (a .keras model with mdn or categorical frames): the
    teacher-forced negative log-likelihood per true frame.

    With --samples N, DATA is also decoded N times with sampling (the
    sampler asked, random for mdn or categorical frames by default; the
    stop criteria as given, e.g. --stop sample; seeds from --seed) and
    length_tv is the total-variation distance between the histogram of
    the true lengths and that of the sampled ones: 0 when they match, 1
    when they share no length. The other figures stay greedy.

    \b
    Example:
      streamgen evaluate samples/valid.jsonl
      streamgen evaluate samples/valid.jsonl --model m.keras --stop head --threshold 0.7
      streamgen evaluate samples/valid.jsonl --model m.tflite
      streamgen evaluate valid.jsonl --model mdn.keras --stop sample --samples 10 --seed 0
    """
    import streamgen as sg
    from streamgen.offline import evaluation

    if samples is None and (sampler is not None or seed is not None):
        raise click.UsageError("the sampling options (--sampler, --temperature, --top-k, "
                               "--top-p, --seed) need --samples N.")
    runtime = common.open_runtime(model_path, stop_kind, threshold,
                                  sampler=sampler)  # .keras or .tflite
    inputs, targets = _load_data(data, runtime, hint=common.bundled_hint(model_path))
    try:
        metrics = sg.evaluate(runtime.with_options(sampler="greedy"), inputs, targets)
        if samples is not None:
            metrics["length_tv"] = evaluation.sampled_length_tv(
                common.drawing(runtime, sampler), inputs, targets, samples, seed=seed)
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

    A .tflite export is described from its metadata, without TensorFlow:
    it stores no ir_size, cell widths or parameter count. frame_loss is
    the frame distribution (mse, mae, categorical, or mdn with its
    mixtures): mdn and categorical frames can be sampled (--sampler).

    \b
    Example:
      streamgen info
      streamgen info --model m.keras --json
      streamgen info --model m.tflite
    """
    runtime = common.open_runtime(model_path)
    facts = describe(runtime, model_path)
    if facts["runtime"] == "LiteRuntime":
        rows = [
            ("model", facts["model"]),
            ("format", facts["format"]),
            ("input_size", facts["input_size"]),
            ("output_size", facts["output_size"]),
            ("cell", facts["cell"] or "custom"),
            ("max_steps", facts["max_steps"]),
            ("decoder_state", facts["decoder_state"]),
            ("stop", _stops_text(facts["stop"])),
            ("frame_loss", _frames_text({"frame_loss": runtime.frame_loss, **facts})),
            ("state_size", facts["state_size"]),
            ("fingerprint", facts["fingerprint"]),
            ("bytes", f"{facts['bytes']:,}"),
        ]
    else:
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
            ("stop", _stops_text(facts["stop"])),
            ("frame_loss", _frames_text(facts)),
            ("parameters", f"{facts['parameters']:,}"),
        ]
    if facts.get("sampler") is not None:  # the default sampler
        rows.insert(rows.index(("stop", _stops_text(facts["stop"]))) + 1,
                    ("sampler", _sampler_text(facts["sampler"])))
    if as_json:
        click.echo(common.dumps(facts))
        return
    for name, value in rows:
        click.echo(f"{name:<15}{value}")


def describe(runtime, path):
    """The facts `info` prints (and a server answers at `GET /v1/model`):
    `runtime.describe()` with the model's name, and a file's size."""
    facts = {"model": path or "default", **runtime.describe()}
    if path is not None and os.path.isfile(path) and facts["runtime"] == "LiteRuntime":
        facts["bytes"] = os.path.getsize(path)
    return facts


def _frames_text(facts):
    """`mse`, or `mdn, 5 mixtures`: the frame distribution."""
    if facts["frame_loss"] == "mdn" and facts.get("mixtures") is not None:
        return f"mdn, {facts['mixtures']} mixtures"
    return facts["frame_loss"]


def _sampler_text(sampler):
    """`TopK(k=3, temperature=1.0)` from a sampler's dict (or its name)."""
    if isinstance(sampler, dict) and "class_name" in sampler:
        return _stop_text({"class_name": sampler["class_name"],
                           "config": sampler.get("config", {})})
    return str(sampler)


def _stops_text(stops):
    return ", ".join(_stop_text(c) for c in stops) or "none (the cap alone)"


def _stop_text(criterion):
    args = ", ".join(f"{k}={v!r}" for k, v in criterion["config"].items())
    return f"{criterion['class_name']}({args})"


# ---------------------------------------------------------------------- #
# export
# ---------------------------------------------------------------------- #
@click.command()
@common.model_option
@common.stop_options
@click.option("--format", "fmt", type=click.Choice(["litert"]), default="litert",
              show_default=True, help="Export format.")
@click.option("--output", "-o", required=True, metavar="OUT.tflite",
              callback=_output_path(".tflite"),
              help="Where to write the exported model (written atomically).")
def export(model_path, stop_kind, threshold, fmt, output):
    """Export a model for serving without TensorFlow.

    litert writes a LiteRT (.tflite) file of one outer step with the state
    explicit; run it with 'streamgen stream --model OUT.tflite' (needs only
    numpy and ai-edge-litert). --stop picks the default stop criteria
    stored in the file (default: the model's); every built-in kind is in
    the file, so 'streamgen stream --stop' can still pick any of them.

    \b
    Example:
      streamgen export --format litert -o model.tflite
      streamgen stream --model model.tflite < samples/inputs.txt
    """
    model = common.load_model(model_path)
    spec = common.stop_spec(common.criteria_dicts(model.stop), stop_kind, threshold)
    try:
        model.export_litert(output, stop=spec)
    except ImportError as error:
        raise common.CliError(str(error)) from None
    except (OSError, ValueError, RuntimeError) as error:
        raise common.CliError(f"{output}: export failed: {error}") from None
    click.echo(f"wrote {output} ({os.path.getsize(output):,} bytes)")
