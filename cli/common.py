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
import zipfile
import zlib

import click

PREFIX = "streamgen: "

STOP_KINDS = ("head", "l2", "none")
DEFAULT_THRESHOLDS = {"head": 0.5, "l2": 3.0}


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
        help="Model file (.keras; stream also runs a .tflite export). "
             "Default: the model bundled with streamgen.",
    )(function)


def stop_options(function):
    """`--stop head|l2|none` and `--threshold F`."""
    function = click.option(
        "--threshold", type=float, metavar="F",
        help="Threshold of the stop criterion: a probability in [0, 1] for "
             "'head' (STOP when p > F), a norm >= 0 for 'l2' "
             "(STOP when ||frame|| > F).",
    )(function)
    return click.option(
        "--stop", "stop_kind", type=click.Choice(STOP_KINDS),
        help="Stop criterion for this run instead of the model's: the "
             "learned stop head, an L2-norm threshold on the frame, or "
             "none (the cap alone).",
    )(function)


# ---------------------------------------------------------------------- #
# Model loading.
# ---------------------------------------------------------------------- #
def load_model(path, allow_lite=False):
    """Loads a `sg.StreamGen` (or, if allowed, a `.tflite` path).

    Args:
        path: the `--model` value, or `None` for the bundled model.
        allow_lite: whether a `.tflite` file is accepted; it is returned as
            the string path (the caller opens it with `sg.LiteStream`).

    Returns:
        A `sg.StreamGen`, or the `.tflite` path.

    Raises:
        click.BadParameter: a file name that is neither `.keras` nor an
            allowed `.tflite`.
        CliError: the file is not a loadable streamgen model.
    """
    if path is None:
        import streamgen as sg

        try:
            return sg.load_default()
        except (OSError, ValueError) as error:
            raise CliError(f"cannot load the bundled model: {error}") from None
    extension = os.path.splitext(path)[1].lower()
    if allow_lite and extension == ".tflite":
        return path
    if extension != ".keras":
        allowed = "a .keras or .tflite" if allow_lite else "a .keras"
        raise bad_value(
            "model_path",
            f"expected {allowed} model file, got {click.format_filename(path)!r}.",
        )
    _check_archive(path)
    import streamgen as sg

    model_class = sg.StreamGen  # first use: imports TensorFlow, registers the classes
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for a bad file
        raise CliError(f"{path}: cannot load the model: {_first_line(error)}") from None
    if not isinstance(model, model_class):
        raise CliError(
            f"{path}: not a streamgen model (it holds a {type(model).__name__})"
        )
    return model


def _check_archive(path):
    """Fails with a clear line unless `path` is an intact `.keras` zip."""
    try:
        if not zipfile.is_zipfile(path):
            raise CliError(
                f"{path}: not a .keras model (not a zip archive: truncated or corrupt?)"
            )
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise CliError(f"{path}: not a .keras model (no config.json inside)")
            broken = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise CliError(f"{path}: not a .keras model ({_first_line(error)})") from None
    if broken is not None:
        raise CliError(f"{path}: corrupt .keras model (bad checksum in {broken})")


def _first_line(error):
    text = str(error).strip().splitlines()
    text = text[0] if text else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ---------------------------------------------------------------------- #
# Stop criteria from options.
# ---------------------------------------------------------------------- #
def criteria_dicts(criteria):
    """`sg.StopCriterion` objects -> `{"class_name", "config"}` dicts."""
    return [{"class_name": type(c).__name__, "config": c.get_config()} for c in criteria]


def stop_spec(model_stop, kind, threshold):
    """Resolves `--stop` / `--threshold` against the model's criteria.

    Args:
        model_stop: the model's criteria as `{"class_name", "config"}`
            dicts (see `criteria_dicts`); they give the defaults.
        kind: `--stop` (`"head"`, `"l2"`, `"none"`) or `None`.
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
    config = {"threshold": DEFAULT_THRESHOLDS[kind]}
    for criterion in model_stop:
        if criterion["class_name"] == class_name:
            config = dict(criterion["config"])
            break
    if threshold is not None:
        config["threshold"] = float(threshold)
    threshold = config["threshold"]
    if kind == "head" and not 0.0 <= threshold <= 1.0:
        raise bad_value(
            "threshold",
            f"{threshold:g} is not a probability in [0, 1] (needed by --stop head).",
        )
    if kind == "l2" and threshold < 0:
        raise bad_value(
            "threshold", f"{threshold:g} is negative (--stop l2 needs a norm >= 0)."
        )
    return [{"class_name": class_name, "config": config}]


def stop_criteria(spec):
    """`stop_spec(...)` -> `sg` stop criteria (`None` keeps the model's)."""
    if spec is None:
        return None
    import streamgen as sg

    classes = {"StopHead": sg.StopHead, "L2Norm": sg.L2Norm}
    return [classes[c["class_name"]](**c["config"]) for c in spec]


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
def number(value):
    """A float as JSON text with 6 significant digits (`null` if not finite)."""
    value = float(value)
    return f"{value:.6g}" if math.isfinite(value) else "null"


def frames_json(frames):
    """`Out[i]` `(L, output_size)` as one compact JSON line, `[]` if empty."""
    return "[" + ",".join(
        "[" + ",".join(number(v) for v in frame) + "]" for frame in frames
    ) + "]"


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
