"""`streamgen plot`: draw the ragged output of one input sequence."""

import os

import click

from streamgen.cli import common
from streamgen.data.lines import BadLine, Vector, format_error, read_events

_WIDTH = 0.8  # each Out[i] is drawn over x in [i, i + 0.8)


@click.command()
@common.model_option
@common.stop_options
@common.cap_option
@common.sampling_options
@click.option("--samples", type=click.IntRange(min=1), metavar="N",
              help="Overlay N sampled continuations (light) over the greedy one (bold).")
@click.option("--sequence", type=click.IntRange(min=1), default=1, show_default=True,
              help="Which sequence of INPUT to draw (sequences end at blank lines).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              metavar="FIG.png", help="Image file; the format follows its extension.")
@click.argument("input_file", metavar="INPUT", type=click.File("rb"))
def plot(model_path, stop_kind, threshold, max_steps, sampler, seed, samples, sequence, output,
         input_file):
    """Run the model on one sequence of INPUT and draw its ragged output.

    One panel per output channel. Out[i] is drawn as its own short segment
    starting at x = i (frame j at x = i + 0.8 j / max_steps); a red x marks
    the STOP token, after the last frame (at y = 0 for an empty Out[i]; no
    mark where the cap ended Out[i]). INPUT has the format
    of 'streamgen stream'. --model may be a .tflite export. Needs
    matplotlib: pip install matplotlib (or, in a streamgen checkout,
    pip install -e ".[plot]").

    The sampling options draw the frames (and --stop sample the STOPs) as
    'streamgen stream' does. --samples N draws N continuations (with the
    sampler asked, random for mdn or categorical frames by default; the
    first is what 'streamgen stream --seed N' prints) as thin light lines
    over the greedy output in bold: the spread of what the model may do.

    \b
    Example:
      streamgen plot samples/inputs.txt -o plot.png
      streamgen plot samples/inputs.txt --sequence 2 --model m.keras -o plot.svg
      streamgen plot samples/inputs.txt --model mdn.keras --samples 20 --seed 1 -o s.png
    """
    pyplot = _pyplot()
    extension = os.path.splitext(output)[1].lower().lstrip(".")
    formats = pyplot.figure().canvas.get_supported_filetypes()
    pyplot.close("all")
    if extension not in formats:
        raise common.bad_value(
            "output", f"unknown image format {extension or '(none)'!r}; use one of "
            f"{', '.join(sorted(formats))}.")
    runtime = common.open_runtime(model_path, stop_kind, threshold, max_steps, sampler=sampler)
    source = common.source_name(input_file)
    inputs = _sequence(input_file, source, runtime.input_size, sequence,
                       common.bundled_hint(model_path))
    drawn = []
    if samples is not None:
        drawn = _samples(runtime, inputs, samples, sampler, seed)
        runtime = runtime.with_options(sampler="greedy")
    import streamgen as sg

    outs = list(sg.Stream(runtime, seed=seed).feed(inputs))  # each (L_i, output_size)
    figure = draw(pyplot, outs, runtime.max_steps, runtime.output_size,
                  f"{os.path.basename(source)}, sequence {sequence}", samples=drawn)
    try:
        figure.savefig(output, dpi=120)
    except OSError as error:
        raise common.CliError(f"{output}: {error.strerror or error}") from None
    finally:
        pyplot.close(figure)
    lengths = " ".join(str(len(out)) for out in outs)
    extra = f", {len(drawn)} samples" if drawn else ""
    click.echo(f"wrote {output}: {len(outs)} outer steps, lengths {lengths}{extra}")


def _samples(runtime, inputs, count, sampler, seed):
    """`count` sampled decodings of `inputs`, a list of lists of `(L_i, O)`.

    Sample `n` has the seed `derive_seed(seed, n)` (sample 0: `seed`), as
    record `n` of `streamgen decode --seed`. Without `--sampler`, frames
    that can be drawn (mdn, categorical) are drawn at random.
    """
    import streamgen as sg

    return sg.decode_sequences(common.drawing(runtime, sampler), [inputs] * count, seed=seed)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise common.CliError(
            "plot needs matplotlib: pip install matplotlib (or, in a streamgen "
            'checkout, pip install -e ".[plot]")') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _sequence(file, source, input_size, wanted, hint=""):
    """The input vectors of sequence `wanted` (1-based) of a file.

    `hint` is appended to a line of the wrong width (see
    `common.bundled_hint`).
    """
    sequences, current = [], []
    for event in read_events(file, input_size):
        if isinstance(event, BadLine):
            message = event.message
            if hint and message.startswith(f"expected {input_size} numbers"):
                message += hint
            raise common.CliError(format_error(source, event.line_no, message))
        if isinstance(event, Vector):
            current.append(event.values)
        elif current:  # a blank line ends a non-empty sequence
            sequences.append(current)
            current = []
    if current:
        sequences.append(current)
    if not sequences:
        raise common.CliError(f"{source}: no input vectors")
    if wanted > len(sequences):
        raise common.bad_value(
            "sequence", f"{wanted}, but {source} holds {len(sequences)} sequence"
            f"{'' if len(sequences) == 1 else 's'}.")
    return sequences[wanted - 1]


def draw(pyplot, outs, cap, output_size, title, samples=()):
    """Draws `outs` (a list of `(L_i, output_size)` arrays); returns the figure.

    `samples`: lists like `outs`, drawn thin and light under `outs`, which
    is then drawn bold.
    """
    from matplotlib.lines import Line2D

    step = _WIDTH / cap
    narrowest = 8.5 if samples else 6.0  # room for the title and the legend
    figure, axes = pyplot.subplots(
        output_size, 1, sharex=True, squeeze=False,
        figsize=(min(max(narrowest, 0.5 * len(outs) + 2), 16), 1.8 * output_size + 1.2))
    bold = 2.0 if samples else 1.2
    for channel, axis in enumerate(axes[:, 0]):
        for sample in samples:
            for i, out in enumerate(sample):
                length = len(out)
                if length:
                    axis.plot(i + step * _range(length), out[:, channel], "-o",
                              color="C1", linewidth=0.6, markersize=1.5, alpha=0.35)
                if length < cap:
                    y = out[-1, channel] if length else 0.0
                    axis.plot(i + step * length, y, "x", color="C3", markersize=3, alpha=0.3)
        for i, out in enumerate(outs):
            length = len(out)
            if length:
                axis.plot(i + step * _range(length), out[:, channel], "-o",
                          color="C0", markersize=2.5, linewidth=bold)
            if length < cap:  # step `length` was the STOP token
                y = out[-1, channel] if length else 0.0
                axis.plot(i + step * length, y, "x", color="C3", markersize=5)
        axis.set_ylabel(f"channel {channel}")
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("outer step i")
    axes[-1, 0].set_xticks(range(len(outs)))
    axes[0, 0].set_title(title + ": Out[i] per outer step", fontsize=10, loc="left")
    handles = [Line2D([], [], color="C0", marker="o", markersize=2.5, linewidth=bold,
                      label="greedy Out[i]" if samples else "frames of Out[i]")]
    if samples:
        handles.append(Line2D([], [], color="C1", linewidth=0.6, alpha=0.6,
                              label=f"{len(samples)} samples"))
    handles.append(Line2D([], [], color="C3", marker="x", linestyle="", label="STOP"))
    axes[0, 0].legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0),
                      ncol=len(handles), fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def _range(length):
    import numpy as np

    return np.arange(length)
