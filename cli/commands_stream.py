"""`streamgen stream`: one input line in, one `Out[i]` line out, flushed."""

import click

from streamgen.cli import common
from streamgen.cli.reader import BadLine, Reset, Vector, format_error, read_events


@click.command()
@common.model_option
@common.stop_options
@click.option(
    "--max-steps", type=click.IntRange(min=1), metavar="N",
    help="Lower cap on the length of every Out[i] (at most the trained cap).",
)
@click.option(
    "--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
    help="On a bad input line: stop with status 1 (fail), or report it, keep "
         "the state and go on (skip).",
)
@click.argument("input_file", metavar="[INPUT]", type=click.File("rb"), default="-")
def stream(model_path, stop_kind, threshold, max_steps, on_error, input_file):
    """Decode input vectors one line at a time, as they arrive.

    INPUT (default: stdin) holds one input vector per line: numbers
    separated by commas and/or whitespace, or a JSON array. For each vector
    one line is written and flushed at once: the JSON array of the frames
    of Out[i] ([] when it is empty), numbers with 6 significant digits.
    A blank line ends a sequence: the state is reset and a blank line is
    written. Lines starting with # are comments (no output).

    A bad line is reported on stderr as
    'streamgen: error: <stdin>:7: expected 3 numbers, got 2'. With
    --on-error fail (default) the run stops there with status 1; with
    --on-error skip it goes on and ends with
    'streamgen: skipped N bad lines' (status 0). A .tflite model (from
    'streamgen export') runs without TensorFlow.

    \b
    Example:
      streamgen stream < samples/inputs.txt
      printf '0.5 0 0.1\\n1 1 -0.5\\n' | streamgen stream --stop none --max-steps 3
      streamgen stream --model m.keras --stop head --threshold 0.7 inputs.txt
    """
    runner, input_size = _open_stream(model_path, stop_kind, threshold, max_steps)
    source = common.source_name(input_file)
    skipped = 0
    for event in read_events(input_file, input_size):
        if isinstance(event, Vector):
            try:
                frames = runner.step(event.values)  # (L_i, output_size)
            except ValueError as error:  # the reader checks first; kept as a guard
                event = BadLine(event.line_no, str(error))
            else:
                click.echo(common.frames_json(frames))  # echo flushes
                continue
        if isinstance(event, Reset):
            runner.reset()
            click.echo("")
            continue
        message = format_error(source, event.line_no, event.message)
        if on_error == "fail":
            raise common.CliError(message)
        common.report(f"error: {message}")
        skipped += 1
    if skipped:
        common.report(f"skipped {skipped} bad line{'' if skipped == 1 else 's'}")


def _open_stream(model_path, stop_kind, threshold, max_steps):
    """A `sg.Stream` (or `sg.LiteStream`) and the model's `input_size`."""
    loaded = common.load_model(model_path, allow_lite=True)
    if isinstance(loaded, str):
        return _open_lite(loaded, stop_kind, threshold, max_steps)
    spec = common.stop_spec(common.criteria_dicts(loaded.stop), stop_kind, threshold)
    common.check_cap(loaded.max_steps, max_steps)
    stream = loaded.open_stream(stop=common.stop_criteria(spec), max_steps=max_steps)
    return stream, loaded.input_size


def _open_lite(path, stop_kind, threshold, max_steps):
    """Opens a `.tflite` export with `sg.LiteStream` (no TensorFlow)."""
    import streamgen as sg

    try:
        stream = sg.LiteStream(path)
    except ImportError as error:
        raise common.CliError(f"{path}: {error}") from None
    except (OSError, ValueError, RuntimeError) as error:
        if "not a streamgen LiteRT export" in str(error):
            raise common.CliError(
                f"{path}: not a streamgen LiteRT export (write one with "
                "'streamgen export --format litert')") from None
        raise common.CliError(f"{path}: {error}") from None
    exported = stream.criteria
    spec = common.stop_spec(exported, stop_kind, threshold)
    common.check_cap(stream.max_steps, max_steps)
    if spec is not None and [c["class_name"] for c in spec] != [
            c["class_name"] for c in exported]:
        names = ", ".join(c["class_name"] for c in exported) or "none"
        raise common.bad_value(
            "stop_kind",
            f"{path} was exported with the stop criteria [{names}]; a .tflite "
            "model can only change their thresholds (export it again with "
            "'streamgen export --stop ...').")
    if spec is not None or max_steps is not None:
        stream = sg.LiteStream(path, stop=spec, max_steps=max_steps)
    return stream, stream.input_size
