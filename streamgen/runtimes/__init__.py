"""The runtimes: one outer step of a model as a pure function of arrays.

- `base`: the `Runtime` contract (`step`, packed states, per-row options)
  and the model fingerprint;
- `tf`: `TFRuntime`, the compiled TensorFlow step (XLA optional);
- `lite`: `LiteRuntime`, a `.tflite` export on LiteRT and numpy alone;
- `export`: writes that `.tflite` file.

`open_runtime(model_or_path)` (here, above the implementations) opens
either. Importing this package does not import TensorFlow.
"""

import os

from streamgen.errors import ModelFileError
from streamgen.runtimes.base import Runtime


def model_facts(path):
    """What a model file says of itself, without opening its runtime.

    TensorFlow-free for `.keras` files too (their `config.json` is read,
    nothing is built): for a caller that resolves options against the model
    and lets others open it (`streamgen decode --ray`: the actors do).

    Args:
        path: a `.keras` model or a `.tflite` export.

    Returns:
        dict: `input_size`, `output_size`, `max_steps` (the trained cap),
        `frame_loss` and `stop` (the criteria, `{"class_name", "config"}`
        dicts), as in `Runtime.describe()`.

    Raises:
        As `open_runtime`; NotAKerasModelError for a config that lacks a
        field.
    """
    path = os.fspath(path)
    if path.lower().endswith(".keras"):
        from streamgen.errors import NotAKerasModelError
        from streamgen.saving import read_config

        config = read_config(path)["config"]
        try:
            facts = {key: config[key] for key in ("input_size", "output_size", "max_steps")}
            facts["frame_loss"] = config.get("frame_loss", "mse")
            stop = config.get("stop") or [{"class_name": "StopHead",
                                           "config": {"threshold": 0.5}}]
            facts["stop"] = [{"class_name": c["class_name"], "config": dict(c["config"])}
                             for c in stop]
        except (KeyError, TypeError) as error:
            raise NotAKerasModelError(f"{path}: not a streamgen model (its config lacks "
                                      f"{error})") from None
        return facts
    runtime = open_runtime(path)  # a .tflite: its checked metadata, no TensorFlow
    return {"input_size": runtime.input_size, "output_size": runtime.output_size,
            "max_steps": runtime.trained_max_steps, "frame_loss": runtime.frame_loss,
            "stop": [dict(c, config=dict(c["config"])) for c in runtime.criteria]}


def open_runtime(model_or_path, stop=None, max_steps=None, **options):
    """Opens the runtime of a model object or a model file.

    Args:
        model_or_path: a `sg.StreamGen`, the path of a `.keras` model or
            a `.tflite` export (`StreamGen.export_litert`), or an open
            `sg.Runtime` (returned as it is, or with `stop`, `max_steps`
            or `sampler=` applied by `with_options`: not opened again).
        stop: the default stop criteria of its rows; `None` uses the
            model's (or the export's). Any built-in criteria; criteria of
            the user's own classes must be those the `.tflite` file was
            exported with.
        max_steps: optional int in `[1, max_steps of the model]`, a lower
            cap.
        **options: `sampler=` (the default sampler of its rows, see
            `sg.samplers`); `jit_compile=` for a TensorFlow model,
            `num_threads=` for a `.tflite` export (not for an open runtime).

    Returns:
        A `TFRuntime` (`.keras`, or a model object) or a `LiteRuntime`
        (`.tflite`; TensorFlow is not imported).

    Raises:
        NotAnExportError: a `.tflite` file that is not an intact streamgen
            export.
        NotAKerasModelError: a `.keras` file that is not an intact streamgen
            model.
        ModelFileError: any other file name.
        FileNotFoundError: no such file.
        ImportError: `ai-edge-litert` missing for a `.tflite` file.

    Example:

    >>> _ = model.export_litert("model.tflite")
    >>> runtime = sg.open_runtime("model.tflite")            # a LiteRuntime
    >>> state = runtime.initial_state(2)                     # (2, S)
    >>> frames, lengths, state = runtime.step(np.zeros((2, 3)), state)
    >>> frames.shape, lengths.shape, state.shape == (2, runtime.state_size)
    ((2, 9, 2), (2,), True)
    """
    if isinstance(model_or_path, Runtime):
        other = sorted(set(options) - {"sampler"})
        if other:
            raise ValueError(
                f"Received `{other[0]}` with an open runtime; it is fixed when the "
                "runtime is opened (sg.open_runtime(model, ...)).")
        if stop is None and max_steps is None and options.get("sampler") is None:
            return model_or_path
        return model_or_path.with_options(stop=stop, max_steps=max_steps,
                                          sampler=options.get("sampler"))
    if not isinstance(model_or_path, (str, os.PathLike)):
        from streamgen.runtimes.tf import TFRuntime

        return TFRuntime(model_or_path, stop=stop, max_steps=max_steps, **options)
    path = os.fspath(model_or_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: a folder, not a model file")
    extension = os.path.splitext(path)[1].lower()
    if extension == ".tflite":
        from streamgen.runtimes.lite import LiteRuntime

        return LiteRuntime(path, stop=stop, max_steps=max_steps, **options)
    if extension == ".keras":
        from streamgen.runtimes.tf import TFRuntime
        from streamgen.saving import load_model

        return TFRuntime(load_model(path), stop=stop, max_steps=max_steps, **options)
    raise ModelFileError(
        f"{path}: expected a .keras model or a .tflite export, got a "
        f"{extension or 'file without extension'!r} file"
    )
