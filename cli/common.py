"""Shared pieces of the `streamgen` commands: errors, options, model loading.

Error policy (one rule for every command):

- *Usage errors* are about what was typed: an unknown option, a bad choice
  or number, a path that does not exist, options that do not fit together
  or do not fit the model (`--max-steps` above its cap). click reports them
  in its standard form (`Usage: ...`, `Error: ...`), exit status 2.
- *Runtime errors* are about what is inside the files: a model file that is
  not a `.keras` model, a malformed JSONL record, a bad input line. They are
  one line on stderr, `streamgen: error: <what>`, exit status 1
  (`CliError`).

Nothing here imports TensorFlow: the library is imported inside functions.
"""

import json
import math
import os

import click

PREFIX = "streamgen: "

# `l2` keeps the model's L2Norm mode ("above" if it has none);
# `l2-above` / `l2-below` choose it.
STOP_KINDS = ("head", "l2", "l2-above", "l2-below", "none")
L2_MODES = {"l2-above": "above", "l2-below": "below"}
DEFAULT_THRESHOLDS = {"head": 0.5, "l2": 3.0}


class FiniteFloat(click.FloatRange):
    """`click.FloatRange` that also refuses `nan` and `inf` (a usage error).

    click's own range checks let NaN through (every comparison with it is
    false); a NaN learning rate or loss weight trains a model of NaNs.
    """

    name = "finite float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def bundled_hint(model_path):
    """A hint for a size mismatch: `""`, or that the bundled model was used."""
    if model_path is not None:
        return ""
    return " (that is the bundled model's size: no --model was given)"


class CliError(click.ClickException):
    """A runtime failure: one line `streamgen: error: <message>`, exit 1."""

    def show(self, file=None):
        click.echo(f"{PREFIX}error: {self.format_message()}", file=file, err=True)


def bad_value(name, message):
    """A `click.BadParameter` for the current command's parameter `name`.

    click then names the option the way it does for its own checks
    (`'--output' / '-o'`).
    """
    ctx = click.get_current_context()
    param = next((p for p in ctx.command.params if p.name == name), None)
    return click.BadParameter(message, ctx=ctx, param=param)


def report(message):
    """Writes `streamgen: <message>` to stderr."""
    click.echo(f"{PREFIX}{message}", err=True)


# ---------------------------------------------------------------------- #
# Option bundles.
# ---------------------------------------------------------------------- #
def model_option(function):
    """`--model PATH`: a `.keras` file (`.tflite` where a command allows)."""
    return click.option(
        "--model", "model_path",
        type=click.Path(exists=True, dir_okay=False),
        help="Model file: .keras, or a .tflite export (not for export). "
             "Default: the model bundled with streamgen.",
    )(function)


def cap_option(function):
    """`--max-steps N`: a lower runtime cap (checked against the model by `check_cap`)."""
    return click.option(
        "--max-steps", type=click.IntRange(min=1), metavar="N",
        help="Lower cap on the length of every Out[i] (at most the trained cap).",
    )(function)


def stop_options(function):
    """`--stop head|l2|l2-above|l2-below|none` and `--threshold F`."""
    function = click.option(
        "--threshold", type=float, metavar="F", help=THRESHOLD_HELP,
    )(function)
    return click.option(
        "--stop", "stop_kind", type=click.Choice(STOP_KINDS),
        help="Stop criterion for this run instead of the model's: " + STOP_HELP,
    )(function)


STOP_HELP = (
    "head (the learned stop head), l2 (an L2-norm threshold on the frame, "
    "in the model's mode: see 'streamgen info'), l2-above / l2-below (an "
    "L2-norm threshold, STOP when ||frame|| > F / < F), or none (the cap "
    "alone).")
THRESHOLD_HELP = (
    "Threshold of the stop criterion: a probability in [0, 1] for head "
    "(STOP when p > F); a norm >= 0 for the l2 kinds (STOP when "
    "||frame|| > F in mode above, < F in mode below).")


# ---------------------------------------------------------------------- #
# Model loading.
# ---------------------------------------------------------------------- #
def load_model(path):
    """Loads a `sg.StreamGen`: the `--model` file, or the bundled model.

    Args:
        path: the `--model` value, or `None` for the bundled model.

    Raises:
        click.BadParameter: a file name that does not end in `.keras`.
        CliError: the file is not a loadable streamgen model.
    """
    if path is None:
        import streamgen as sg

        try:
            return sg.load_default()
        except (OSError, ValueError) as error:
            raise CliError(f"cannot load the bundled model: {error}") from None
    if os.path.splitext(path)[1].lower() != ".keras":
        raise bad_value(
            "model_path", f"expected a .keras model file, got {click.format_filename(path)!r}.")
    import streamgen as sg

    try:
        return sg.load_model(path)
    except (OSError, sg.ModelFileError) as error:
        raise CliError(str(error)) from None


def open_runtime(path, stop_kind=None, threshold=None, max_steps=None, jit_compile=None):
    """Opens the runtime of `--model` (`.keras`, `.tflite`, or the bundled model), once.

    `--stop`, `--threshold` and `--max-steps` are resolved against the
    model's own criteria (see `stop_spec`) and applied with
    `runtime.with_options`, which shares the compiled step (TensorFlow) or
    the file's checked bytes (LiteRT): the model is read and traced once.
    A `.tflite` model runs on LiteRT without TensorFlow; like a `.keras`
    model it takes any built-in criteria (criteria of the user's own
    classes are fixed in the file).

    Args:
        jit_compile: `True` to compile a TensorFlow step with XLA (no
            meaning for a `.tflite` model).

    Returns:
        A `sg.Runtime`.

    Raises:
        click.BadParameter / click.UsageError: options that do not fit the
            model; CliError: a file that is not a streamgen model.
    """
    import streamgen as sg

    extension = None if path is None else os.path.splitext(path)[1].lower()
    if extension not in (None, ".keras", ".tflite"):
        raise bad_value(
            "model_path",
            f"expected a .keras or .tflite model file, got {click.format_filename(path)!r}.")
    try:
        if extension == ".tflite":
            runtime = sg.open_runtime(path)
        else:
            runtime = sg.open_runtime(load_model(path), jit_compile=bool(jit_compile))
    except ImportError as error:
        raise CliError(f"{path}: {error}") from None
    except (OSError, sg.ModelFileError) as error:
        raise CliError(str(error)) from None
    spec = stop_spec(runtime.criteria, stop_kind, threshold)
    check_cap(runtime.max_steps, max_steps)
    if spec is None and max_steps is None:
        return runtime
    try:
        return runtime.with_options(stop=spec, max_steps=max_steps)
    except (TypeError, ValueError) as error:
        raise bad_value("stop_kind", f"{path or 'the model'} cannot take it: {error}")


def open_stream(path, stop_kind=None, threshold=None, max_steps=None, url=None, token=None):
    """A `sg.Stream` for `stream` and `plot`: over `--model`, or over a server (`--url`).

    With `url`, no TensorFlow is imported: the server has the model, and
    `--stop`, `--threshold` and `--max-steps` are resolved against its
    criteria.

    Raises:
        click.UsageError / click.BadParameter: options that do not fit the
            model; CliError: a file that is not a streamgen model, no
            server, or a wrong token.
    """
    import streamgen as sg

    if url is None:
        return sg.Stream(open_runtime(path, stop_kind, threshold, max_steps))
    if path is not None:
        raise click.UsageError("--model cannot be used with --url (the server has the model).")
    try:
        client = sg.connect(url, token=token)
    except (ConnectionError, PermissionError, ValueError) as error:
        raise CliError(str(error)) from None
    click.get_current_context().call_on_close(client.close)
    spec = stop_spec(client.criteria, stop_kind, threshold)
    check_cap(client.trained_max_steps, max_steps)
    try:
        return client.open_stream(stop=spec, max_steps=max_steps)
    except (TypeError, ValueError) as error:
        raise bad_value("stop_kind", f"the server's model cannot take it: {error}")


# ---------------------------------------------------------------------- #
# Stop criteria from options.
# ---------------------------------------------------------------------- #
def criteria_dicts(criteria):
    """`sg.StopCriterion` objects -> `{"class_name", "config"}` dicts."""
    from streamgen.criteria import criterion_dict

    return [criterion_dict(c) for c in criteria]


def stop_spec(model_stop, kind, threshold):
    """Resolves `--stop` / `--threshold` against the model's criteria.

    Args:
        model_stop: the model's criteria as `{"class_name", "config"}`
            dicts (see `criteria_dicts`); they give the defaults.
        kind: `--stop` (one of `STOP_KINDS`) or `None`.
        threshold: `--threshold` or `None`.

    Returns:
        `None` (keep the model's criteria), or a list of
        `{"class_name", "config"}` dicts, `[]` for the cap alone. A kind
        the model also has keeps its other settings (an L2Norm's `mode`).

    Raises:
        click.BadParameter / click.UsageError: a threshold that does not fit.
    """
    if threshold is not None and math.isnan(threshold):
        raise bad_value("threshold", "nan is not a threshold.")
    if kind is None:
        if threshold is None:
            return None
        if len(model_stop) != 1:
            raise click.UsageError(
                f"--threshold needs --stop head|l2 (the model has {len(model_stop)} "
                "stop criteria)."
            )
        kind = "head" if model_stop[0]["class_name"] == "StopHead" else "l2"
    if kind == "none":
        if threshold is not None:
            raise click.UsageError("--threshold cannot be used with --stop none.")
        return []
    class_name = "StopHead" if kind == "head" else "L2Norm"
    mode = L2_MODES.get(kind)  # None: the model's, or "above"
    config = {"threshold": DEFAULT_THRESHOLDS["head" if kind == "head" else "l2"]}
    for criterion in model_stop:
        if criterion["class_name"] == class_name and mode in (
                None, criterion["config"].get("mode", "above")):
            config = dict(criterion["config"])
            break
    if class_name == "L2Norm":
        config["mode"] = mode or config.get("mode", "above")
    if threshold is not None:
        config["threshold"] = float(threshold)
    threshold = config["threshold"]
    if kind == "head" and not 0.0 <= threshold <= 1.0:
        raise bad_value(
            "threshold",
            f"{threshold:g} is not a probability in [0, 1] (needed by --stop head).",
        )
    if class_name == "L2Norm" and threshold < 0:
        raise bad_value(
            "threshold", f"{threshold:g} is negative (--stop {kind} needs a norm >= 0)."
        )
    return [{"class_name": class_name, "config": config}]


def check_cap(model_cap, max_steps):
    """`--max-steps` may only lower the trained cap."""
    if max_steps is not None and model_cap is not None and max_steps > model_cap:
        raise bad_value(
            "max_steps",
            f"{max_steps} is above the model's trained cap of {model_cap} "
            "(--max-steps may only lower it).",
        )


# ---------------------------------------------------------------------- #
# Output.
# ---------------------------------------------------------------------- #
# `number` and `frames_json` live in `streamgen.data.text` (TF-free), shared with
# the server so that `streamgen stream --url` prints the same bytes.
from streamgen.data.text import frames_json, number  # noqa: E402,F401


def rounded(value):
    """A JSON-safe float with 6 significant digits (`None` if not finite)."""
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None


def dumps(obj, **kwargs):
    """`json.dumps` that never writes NaN/Infinity (they become null)."""
    return json.dumps(obj, allow_nan=False, **kwargs)


def source_name(file):
    """The name used in messages: `<stdin>` or the file name as given."""
    name = getattr(file, "name", None)
    if not isinstance(name, str) or name in ("-", "<stdin>"):
        return "<stdin>"
    return name
