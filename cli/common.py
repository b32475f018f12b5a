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

import functools
import json
import math
import os

import click

PREFIX = "streamgen: "

# `l2` keeps the model's L2Norm mode ("above" if it has none);
# `l2-above` / `l2-below` choose it.
STOP_KINDS = ("head", "l2", "l2-above", "l2-below", "sample", "none")
L2_MODES = {"l2-above": "above", "l2-below": "below"}
DEFAULT_THRESHOLDS = {"head": 0.5, "l2": 3.0, "sample": 1.0}
# `--stop` kind -> criterion class; `--threshold` is the config's value key.
STOP_CLASSES = {"head": "StopHead", "sample": "StopSample"}  # the rest: L2Norm
VALUE_KEYS = {"StopSample": "temperature"}

SAMPLER_NAMES = ("greedy", "random", "top-k", "top-p")
SEED_MAX = 2**32 - 1  # `--seed`: the library's seeds are in [0, 2**32)


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
    "L2-norm threshold, STOP when ||frame|| > F / < F), sample (STOP drawn "
    "with probability sigmoid(stop_logit / F), F a temperature > 0, default "
    "1; reproducible with --seed), or none (the cap alone).")
THRESHOLD_HELP = (
    "Threshold of the stop criterion: a probability in [0, 1] for head "
    "(STOP when p > F); a norm >= 0 for the l2 kinds (STOP when "
    "||frame|| > F in mode above, < F in mode below); for sample, its "
    "temperature > 0 (STOP drawn with probability sigmoid(logit / F)).")


def sampling_options(function):
    """`--sampler`, `--temperature`, `--top-k`, `--top-p` and `--seed`.

    The command receives them resolved, as two keyword arguments:
    `sampler` (`None` for the model's own sampler, else a sampler's
    `{"class_name", "config"}` dict; see `sampler_spec`) and `seed` (an int
    in `[0, 2**32)`, or `None` for a fresh one). Whether the sampler fits
    the model's frames is checked when the model is opened
    (`open_runtime`).
    """
    @functools.wraps(function)
    def command(*args, sampler_name, temperature, top_k, top_p, **kwargs):
        spec = sampler_spec(sampler_name, temperature, top_k, top_p)
        return function(*args, sampler=spec, **kwargs)

    for option in reversed([
        click.option("--sampler", "sampler_name", type=click.Choice(SAMPLER_NAMES),
                     help=SAMPLER_HELP),
        click.option("--temperature", type=FiniteFloat(min=0, min_open=True), metavar="F",
                     help="Temperature of the sampler (> 0, default 1): log-probabilities "
                          "divided by F, mdn scales times sqrt(F). Alone: --sampler random."),
        click.option("--top-k", type=click.IntRange(min=1), metavar="K",
                     help="Draw among the K most likely classes / mixture components "
                          "(implies --sampler top-k)."),
        click.option("--top-p", type=FiniteFloat(min=0, max=1, min_open=True), metavar="P",
                     help="Draw in the nucleus: the most likely classes / components "
                          "whose probability reaches P, 0 < P <= 1 (implies --sampler "
                          "top-p)."),
        click.option("--seed", type=click.IntRange(0, SEED_MAX), metavar="N",
                     help="Seed of the random draws (sampler and --stop sample): the same "
                          "seed and input give the same output. Default: a fresh one."),
    ]):
        command = option(command)
    return command


SAMPLER_HELP = (
    "How frames are drawn: greedy (the most likely; the default, and the "
    "only one for mse / mae frames), random, top-k or top-p (drawn from "
    "the model's categorical or mdn frame distribution).")


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


def open_runtime(path, stop_kind=None, threshold=None, max_steps=None, jit_compile=None,
                 sampler=None):
    """Opens the runtime of `--model` (`.keras`, `.tflite`, or the bundled model), once.

    `--stop`, `--threshold` and `--max-steps` are resolved against the
    model's own criteria (see `stop_spec`) and, with the sampler, applied
    with `runtime.with_options`, which shares the compiled step
    (TensorFlow) or the file's checked bytes (LiteRT): the model is read
    and traced once. A `.tflite` model runs on LiteRT without TensorFlow;
    like a `.keras` model it takes any built-in criteria and any sampler
    (criteria of the user's own classes are fixed in the file).

    Args:
        jit_compile: `True` to compile a TensorFlow step with XLA (no
            meaning for a `.tflite` model).
        sampler: `None` (the model's), or a sampler's `{"class_name",
            "config"}` dict (`sampler_spec`).

    Returns:
        A `sg.Runtime`.

    Raises:
        click.BadParameter / click.UsageError: options that do not fit the
            model (a sampler that cannot draw its frames); CliError: a file
            that is not a streamgen model.
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
    check_sampler(sampler, runtime.frame_loss)
    if spec is None and max_steps is None and sampler is None:
        return runtime
    try:
        return runtime.with_options(stop=spec, max_steps=max_steps, sampler=sampler)
    except (TypeError, ValueError) as error:
        raise bad_value("stop_kind", f"{path or 'the model'} cannot take it: {error}")


def resolve_options(path, stop_kind=None, threshold=None, max_steps=None, sampler=None):
    """The options of a model that others open (`decode --ray`: the actors).

    `--stop`, `--threshold`, `--max-steps` and the sampler are checked
    against the file's own facts (`streamgen.runtimes.model_facts`: a
    `.keras` file's config, a `.tflite` file's metadata), so the model is
    not opened here: no TensorFlow, no trace in the driver.

    Returns:
        `(file, stop)`: the model file (the bundled model's for `None`) and
        the stop criteria as `{"class_name", "config"}` dicts (the
        model's when `--stop` is not given).

    Raises:
        As `open_runtime`.
    """
    import streamgen as sg
    from streamgen.runtimes import model_facts

    extension = None if path is None else os.path.splitext(path)[1].lower()
    if extension not in (None, ".keras", ".tflite"):
        raise bad_value(
            "model_path",
            f"expected a .keras or .tflite model file, got {click.format_filename(path)!r}.")
    file = sg.default_model_path() if path is None else path
    try:
        facts = model_facts(file)
    except ImportError as error:
        raise CliError(f"{path}: {error}") from None
    except (OSError, sg.ModelFileError) as error:
        raise CliError(str(error)) from None
    spec = stop_spec(facts["stop"], stop_kind, threshold)
    check_cap(facts["max_steps"], max_steps)
    check_sampler(sampler, facts["frame_loss"])
    return file, facts["stop"] if spec is None else spec


def open_stream(path, stop_kind=None, threshold=None, max_steps=None, url=None, token=None,
                sampler=None, seed=None):
    """A `sg.Stream` for `stream` and `plot`: over `--model`, or over a server (`--url`).

    With `url`, no TensorFlow is imported: the server has the model, and
    `--stop`, `--threshold` and `--max-steps` are resolved against its
    criteria; the sampler and seed are sent with the stream's opening.

    Args:
        sampler: `None` or a sampler's dict (`sampler_spec`).
        seed: `None` (a fresh seed) or an int in `[0, 2**32)`.

    Raises:
        click.UsageError / click.BadParameter: options that do not fit the
            model; CliError: a file that is not a streamgen model, no
            server, or a wrong token.
    """
    import streamgen as sg

    if url is None:
        return sg.Stream(open_runtime(path, stop_kind, threshold, max_steps, sampler=sampler),
                         seed=seed)
    if path is not None:
        raise click.UsageError("--model cannot be used with --url (the server has the model).")
    try:
        client = sg.connect(url, token=token)
    except (ConnectionError, PermissionError, ValueError) as error:
        raise CliError(str(error)) from None
    click.get_current_context().call_on_close(client.close)
    spec = stop_spec(client.criteria, stop_kind, threshold)
    check_cap(client.trained_max_steps, max_steps)
    check_sampler(sampler, getattr(client, "frame_loss", None))
    try:
        return client.open_stream(stop=spec, max_steps=max_steps, sampler=sampler, seed=seed)
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
        threshold: `--threshold` or `None` (for `sample`, the temperature).

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
                f"--threshold needs --stop head|l2|sample (the model has {len(model_stop)} "
                "stop criteria)."
            )
        kinds = {class_name: kind for kind, class_name in STOP_CLASSES.items()}
        kind = kinds.get(model_stop[0]["class_name"], "l2")
    if kind == "none":
        if threshold is not None:
            raise click.UsageError("--threshold cannot be used with --stop none.")
        return []
    class_name = STOP_CLASSES.get(kind, "L2Norm")
    key = VALUE_KEYS.get(class_name, "threshold")
    mode = L2_MODES.get(kind)  # None: the model's, or "above"
    config = {key: DEFAULT_THRESHOLDS["l2" if class_name == "L2Norm" else kind]}
    for criterion in model_stop:
        if criterion["class_name"] == class_name and mode in (
                None, criterion["config"].get("mode", "above")):
            config = dict(criterion["config"])
            break
    if class_name == "L2Norm":
        config["mode"] = mode or config.get("mode", "above")
    if threshold is not None:
        config[key] = float(threshold)
    threshold = config[key]
    if kind == "head" and not 0.0 <= threshold <= 1.0:
        raise bad_value(
            "threshold",
            f"{threshold:g} is not a probability in [0, 1] (needed by --stop head).",
        )
    if class_name == "L2Norm" and threshold < 0:
        raise bad_value(
            "threshold", f"{threshold:g} is negative (--stop {kind} needs a norm >= 0)."
        )
    if kind == "sample" and not (math.isfinite(threshold) and threshold > 0):
        raise bad_value(
            "threshold",
            f"{threshold:g} is not a temperature > 0 (needed by --stop sample).",
        )
    return [{"class_name": class_name, "config": config}]


# ---------------------------------------------------------------------- #
# Samplers from options.
# ---------------------------------------------------------------------- #
_SAMPLER_CLASSES = {"greedy": "Greedy", "random": "Random", "top-k": "TopK", "top-p": "TopP"}


def sampler_spec(name, temperature=None, top_k=None, top_p=None):
    """Resolves `--sampler`, `--temperature`, `--top-k` and `--top-p`.

    Without `--sampler`, `--top-k` means top-k, `--top-p` top-p and
    `--temperature` alone random.

    Returns:
        `None` (no option: the model's sampler), or a sampler as a
        `{"class_name", "config"}` dict (`sg.samplers.serialize`).

    Raises:
        click.UsageError / click.BadParameter: options that do not fit
            together.
    """
    if top_k is not None and top_p is not None:
        raise click.UsageError("--top-k cannot be used with --top-p (choose one sampler).")
    if name is None:
        if top_k is not None:
            name = "top-k"
        elif top_p is not None:
            name = "top-p"
        elif temperature is not None:
            name = "random"
        else:
            return None
    if name == "greedy" and temperature is not None:
        raise click.UsageError(
            "--temperature cannot be used with --sampler greedy (it draws nothing).")
    for option, value, owner in (("--top-k", top_k, "top-k"), ("--top-p", top_p, "top-p")):
        if value is not None and name != owner:
            raise click.UsageError(f"{option} cannot be used with --sampler {name} "
                                   f"(it needs --sampler {owner}).")
        if value is None and name == owner:
            raise bad_value("sampler_name", f"{owner} needs {option} "
                            f"{'K' if owner == 'top-k' else 'P'}.")
    config = {} if temperature is None else {"temperature": float(temperature)}
    if top_k is not None:
        config["k"] = int(top_k)
    if top_p is not None:
        config["p"] = float(top_p)
    from streamgen import samplers

    try:
        return samplers.serialize({"class_name": _SAMPLER_CLASSES[name], "config": config})
    except ValueError as error:  # e.g. --top-k above what a float32 holds
        raise bad_value("top_k" if top_k is not None else "sampler_name", str(error)) from None


def drawing(runtime, sampler):
    """The runtime that `--samples` decodes with: the sampler asked
    (`sampler`, already applied to `runtime`), else random where the
    model's frames can be drawn (mdn, categorical), else the runtime as it
    is (only `--stop sample` draws then)."""
    if sampler is None and runtime.frame_loss in ("mdn", "categorical"):
        return runtime.with_options(sampler="random")
    return runtime


def check_sampler(sampler, frame_loss):
    """A sampler that cannot draw the model's frames: a usage error on `--sampler`.

    Args:
        sampler: `None` or a sampler's dict (`sampler_spec`).
        frame_loss: the model's frame kind, or `None` when not known (a
            server that does not say; it checks itself).
    """
    if sampler is None or frame_loss is None:
        return
    from streamgen import samplers

    try:
        samplers.check_applies(sampler, frame_loss)
    except ValueError:
        name = {v: k for k, v in _SAMPLER_CLASSES.items()}[sampler["class_name"]]
        raise bad_value(
            "sampler_name",
            f"{name} cannot draw this model's {frame_loss!r} frames (frame_loss="
            f"{frame_loss}): only greedy decodes them; sample a model trained with "
            "--frame-loss mdn or categorical.") from None


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
