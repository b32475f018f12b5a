"""The bundled default model, trained on the sample task (`samples/`).

`samples/train_default.py` reproduces `streamgen/default_model.keras`.
"""

import importlib.resources

import keras

from streamgen.quiet import import_tensorflow

import_tensorflow()

DEFAULT_MODEL = "default_model.keras"


def load_default():
    """Loads the default `sg.StreamGen` shipped inside the package.

    It was trained on the sample task of `samples/` (input_size=3,
    output_size=2, max_steps=9: see `samples/README.md`) by
    `samples/train_default.py`. It is returned uncompiled; call
    `compile(optimizer=...)` before training it further.

    Returns:
        A `sg.StreamGen` (a new instance on every call).

    Raises:
        FileNotFoundError: if the package was installed without its data.

    Example:

    >>> model = sg.load_default()
    >>> inputs, targets = sg.load_jsonl("samples/valid.jsonl")
    >>> sg.evaluate(model, inputs, targets)["length_accuracy"] >= 0.95
    True
    """
    resource = importlib.resources.files("streamgen").joinpath(DEFAULT_MODEL)
    if not resource.is_file():
        raise FileNotFoundError(
            f"The default model file `{DEFAULT_MODEL}` is missing from the "
            "streamgen package; reinstall streamgen (it ships as package "
            "data) or rebuild it with `python samples/train_default.py`."
        )
    with importlib.resources.as_file(resource) as path:
        return keras.models.load_model(path, compile=False)
