"""`streamgen stream`: one input line in, one `Out[i]` line out, flushed."""

import re

import click

from streamgen.cli import common
from streamgen.data.lines import BadLine, Reset, Vector, format_error, read_events


@click.command()
@common.model_option
@common.stop_options
@common.cap_option
@common.sampling_options
@click.option(
    "--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
    help="On a bad input line: stop with status 1 (fail), or report it, keep "
         "the state and go on (skip).",
)
@click.option(
    "--url", metavar="URL",
    help="Stream through a 'streamgen serve' server (ws://HOST:PORT) instead of "
         "a local model; the output is the same, byte for byte.",
)
@click.option("--token", envvar="STREAMGEN_TOKEN", metavar="T",
              help="The server's token (with --url). Default: $STREAMGEN_TOKEN.")
@click.argument("input_file", metavar="[INPUT]", type=click.File("rb"), default="-")
def stream(model_path, stop_kind, threshold, max_steps, sampler, seed, on_error, url, token,
           input_file):
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

    A model with mdn or categorical frames can sample them (--sampler,
    --temperature, --top-k, --top-p) and any model can draw its STOP
    (--stop sample); --seed N makes the draws repeatable: the same seed
    and input give the same output, on .keras, .tflite and --url alike.

    \b
    Example:
      streamgen stream < samples/inputs.txt
      printf '0.5 0 0.1\\n1 1 -0.5\\n' | streamgen stream --stop none --max-steps 3
      streamgen stream --model m.keras --stop head --threshold 0.7 inputs.txt
      streamgen stream --model mdn.keras --top-p 0.9 --temperature 0.7 --seed 7 inputs.txt
      streamgen stream --model mdn.keras --stop sample --threshold 0.5 --seed 1 inputs.txt
    """
    stream = common.open_stream(model_path, stop_kind, threshold, max_steps, url, token,
                                sampler=sampler, seed=seed)
    source = common.source_name(input_file)
    skipped = 0
    for event in read_events(input_file, stream.input_size):
        if isinstance(event, Vector):
            try:
                out = stream.step(event.values)  # (L_i, output_size)
            except ValueError as error:  # the reader checks first; kept as a guard
                event = BadLine(event.line_no, str(error))
            except ConnectionError as error:  # the server went away (--url)
                raise common.CliError(str(error)) from None
            else:
                click.echo(common.frames_json(out))  # echo flushes
                continue
        if isinstance(event, Reset):
            stream.reset()
            click.echo("")
            continue
        text = event.message
        if url is None and re.fullmatch(r"expected \d+ numbers, got \d+", text):
            text += common.bundled_hint(model_path)  # --model forgotten?
        message = format_error(source, event.line_no, text)
        if on_error == "fail":
            raise common.CliError(message)
        common.report(f"error: {message}")
        skipped += 1
    if skipped:
        common.report(f"skipped {skipped} bad line{'' if skipped == 1 else 's'}")
