"""The bundled default model, trained on the sample task (`samples/`).

`samples/train_default.py` reproduces `streamgen/default_model.keras`.
"""

import importlib.resources

from streamgen import saving

DEFAULT_MODEL = "default_model.keras"


def default_model_path():
    """The path of the bundled model file, `streamgen/default_model.keras`.

    For code that opens it as a file (`sg.open_runtime`, a server, Ray
    workers); `load_default()` loads it. Does not import TensorFlow.

    Raises:
        FileNotFoundError: if the package was installed without its data.
    """
    resource = importlib.resources.files("streamgen").joinpath(DEFAULT_MODEL)
    if not resource.is_file():
        raise FileNotFoundError(
            f"The default model file `{DEFAULT_MODEL}` is missing from the "
            "streamgen package; reinstall streamgen (it ships as package "
            "data) or rebuild it with `python samples/train_default.py`."
        )
    return str(resource)


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
    return saving.load_model(default_model_path())
