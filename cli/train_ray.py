"""`streamgen train --ray`: the command's side of `streamgen.training.ray.train_on_ray`.

Everything is checked here before any worker starts (OUT by the option's
callback, DATA's widths, the whole --valid file); the figures of each
epoch come back from rank 0 and are printed as one line.
"""

import math

import click

from streamgen.cli import common

_DEFAULT_WORKERS = 2


def data_and_address(data, ray_address, workers, data_files):
    """DATA, with `--ray DATA ...` (the flag without an address) read as DATA.

    Raises:
        click.UsageError: no DATA, or --workers without --ray.
    """
    from streamgen.cli.commands_decode import _ADDRESS

    if ray_address is not None and not _ADDRESS.match(ray_address):
        data = data_files(None, None, (ray_address,)) + list(data)
    if not data:
        raise click.UsageError("Missing argument 'DATA...'.")
    if workers is not None and ray_address is None:
        raise click.UsageError("--workers needs --ray.")
    return data


def address(ray_address):
    """`--ray` without ADDRESS (or with a file after it): None, a new local cluster."""
    from streamgen.cli.commands_decode import _ADDRESS

    if ray_address == "local" or not _ADDRESS.match(ray_address):
        return None
    return ray_address


def run(ray_address, workers, data, output, valid, quiet, **options):
    """Trains on Ray; prints one line per epoch and the result line."""
    try:
        from streamgen.training import ray as raytrain
    except ImportError as error:  # pragma: no cover (the serve extra)
        raise common.CliError(f"--ray needs Ray Train (pip install -e '.[serve]'): {error}") \
            from None
    workers = workers or _DEFAULT_WORKERS
    if options["batch_size"] % workers:
        raise common.bad_value("batch_size", f"{options['batch_size']} is not a multiple of "
                               f"--workers {workers} (it is the global batch, split over "
                               f"the workers).")
    epochs = options["epochs"]
    if valid is not None:  # every record checked now, as without --ray
        from streamgen.cli.commands_model import _data_widths, _load_data

        input_size, output_size = _data_widths(data, options["max_steps"])
        _load_data(valid, max_steps=options["max_steps"], input_size=input_size,
                   output_size=output_size)
    seen = {"epochs": 0, "best": None}

    def on_epoch(logs):
        if "resumed" in logs:
            common.report(f"a worker failed; resumed from the checkpoint of epoch "
                          f"{logs['resumed']}")
            return
        seen["epochs"] = int(logs["epoch"])
        if logs.get("saved") and "val_loss" in logs:
            seen["best"] = (int(logs["epoch"]) - 1, float(logs["val_loss"]))
        if quiet:
            return
        names = [n for n in ("loss", "frame_loss", "stop_accuracy", "stop_loss", "val_loss",
                             "val_frame_loss", "val_stop_accuracy", "val_stop_loss")
                 if n in logs]
        values = " ".join(f"{n} {float(logs[n]):.6g}" for n in names)
        click.echo(f"epoch {int(logs['epoch'])}/{epochs}: {values} ({logs['seconds']:.1f} s, "
                   f"{logs['records_per_s']:,.0f} records/s on {workers} workers)")

    try:
        result = raytrain.train_on_ray(data, output, valid=valid, address=ray_address,
                                       workers=workers, on_epoch=on_epoch, **options)
    except KeyboardInterrupt:
        done = f"interrupted after {_epochs(seen['epochs'])}"
        if seen["best"] is not None or (valid is None and seen["epochs"]):
            common.report(f"{done}; every worker stopped; the "
                          f"{'best model so far' if valid else 'last epoch' + chr(39) + 's model'}"
                          f" is in {output}")
        else:
            common.report(f"{done}; every worker stopped; nothing was saved")
        raise click.exceptions.Exit(130) from None
    except (ValueError, RuntimeError, OSError) as error:
        raise common.CliError(str(error)) from None
    history = result["history"]
    if result["stopped"] == "diverged":
        raise common.CliError("training diverged: the loss became NaN or infinite at epoch "
                              f"{len(history)} (try a lower --learning-rate); "
                              + ("the best model before it is in " + output
                                 if result["saved"] else "no model was saved"))
    early = ""
    if result["stopped"] == "patience":
        early = (f"; stopped early, {'val_loss' if valid else 'loss'} had not improved for "
                 f"{_epochs(options['patience'])}")
    if valid is None:
        click.echo(f"saved {output} ({_epochs(len(history))}, "
                   f"loss {common.number(history[-1]['loss'])}{early})")
    elif result["best"] is None or not math.isfinite(result["best"][1]):
        raise common.CliError("no epoch had a finite val_loss, so no model was saved")
    else:
        epoch, value = result["best"]
        click.echo(f"saved {output}: the best of {_epochs(len(history))} "
                   f"(epoch {epoch + 1}, val_loss {common.number(value)}{early})")


def _epochs(count):
    return f"{count} epoch{'' if count == 1 else 's'}"
