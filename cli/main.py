"""The `streamgen` command: a click group of thin commands over the library.

Commands live in `commands_*.py`; shared options, model loading and the
error policy in `common.py`. No module here imports TensorFlow at import
time, so `streamgen --help` stays fast and a `.tflite` model streams
without it.

Exit statuses: 0 success; 1 a runtime error (`streamgen: error: ...`) or a
closed output pipe; 2 a usage error (click's `Usage: ... Error: ...`);
130 interrupted (Ctrl-C).
"""

import os
import sys

import click

from streamgen.cli.commands_model import evaluate, export, info, train
from streamgen.cli.commands_plot import plot
from streamgen.cli.commands_stream import stream


class StreamgenGroup(click.Group):
    """A click group that ends quietly on Ctrl-C and on a closed pipe."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None
        except BrokenPipeError:
            # The reader went away (`streamgen stream | head -1`). As the
            # Python docs advise (signal module, "Note on SIGPIPE"), point
            # stdout at devnull so the flush at exit cannot fail again.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):  # no real fd (tests)
                pass
            raise click.exceptions.Exit(1) from None


@click.group(
    name="streamgen",
    cls=StreamgenGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="streamgen", prog_name="streamgen")
def cli():
    """Hierarchical streaming generation: one input vector in, one
    variable-length output sequence Out[i] out, as soon as it is decoded.

    Run 'streamgen COMMAND -h' for a command's options and an example.

    \b
    Example:
      streamgen stream < samples/inputs.txt
      streamgen train samples/train.jsonl --valid samples/valid.jsonl -o m.keras
      streamgen evaluate samples/valid.jsonl --model m.keras
    """


for _command in (stream, train, evaluate, info, plot, export):
    cli.add_command(_command)


def main():
    """Console-script entry point (`streamgen`)."""
    cli.main(prog_name="streamgen")


if __name__ == "__main__":
    main()
