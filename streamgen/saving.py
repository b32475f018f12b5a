"""Model files: atomic writes, and `.keras` loading with clear errors.

Every file streamgen writes (`.keras` models, checkpoints, `.tflite`
exports) goes to a temporary file in the same folder and is then moved over
the target with `os.replace`, which is atomic on POSIX and Windows: an
interrupt, a crash or a full disk leaves the previous file or the new one,
never a broken one.

Nothing here imports TensorFlow at import time.
"""

import contextlib
import os
import re
import tempfile
import zipfile
import zlib

from streamgen.errors import NotAKerasModelError
from streamgen.outputs import creation_mode
from streamgen.quiet import import_tensorflow


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; on success moves it to `path`.

    The temporary file keeps `path`'s extension (Keras checks it) and gets
    the mode the umask gives a new file (not `mkstemp`'s 0600). On any
    exception, `KeyboardInterrupt` included, the temporary file is removed
    and `path` is left as it was.

    Example:

    >>> with atomic_path("model.keras") as tmp:
    ...     model.save(tmp)
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    extension = os.path.splitext(name)[1]
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{extension}",
                                         dir=folder)
    try:  # mkstemp makes it 0600; a model file follows the umask, as `open` would
        os.fchmod(handle, creation_mode())
    finally:
        os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def write_bytes(path, content):
    """Writes `content` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())


def save_model(model, path):
    """`model.save(path)`, atomically: `path` is never left half-written."""
    with atomic_path(path) as temporary:
        model.save(temporary)


def check_archive(path):
    """Raises `NotAKerasModelError` unless `path` is an intact `.keras` zip."""
    try:
        if not zipfile.is_zipfile(path):
            raise NotAKerasModelError(
                f"{path}: not a .keras model (not a zip archive: truncated or corrupt?)")
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise NotAKerasModelError(f"{path}: not a .keras model (no config.json inside)")
            broken = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error, RuntimeError) as error:
        raise NotAKerasModelError(f"{path}: not a .keras model ({first_line(error)})") from None
    if broken is not None:
        raise NotAKerasModelError(f"{path}: corrupt .keras model (bad checksum in {broken})")


def read_config(path):
    """A `.keras` file's model config (its `config.json`), without TensorFlow.

    What the file says of itself, for a caller that only needs the
    model's facts (`streamgen.runtimes.model_facts`); nothing is built.

    Returns:
        dict: `{"class_name": ..., "config": {...}}` as Keras wrote it.

    Raises:
        NotAKerasModelError: the file is not an intact `.keras` archive
            or its `config.json` is not a JSON object.
    """
    import json

    path = os.fspath(path)
    check_archive(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, ValueError) as error:
        raise NotAKerasModelError(f"{path}: unreadable config.json ({first_line(error)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise NotAKerasModelError(f"{path}: not a .keras model (config.json holds no config)")
    return config


def load_model(path):
    """Loads a `sg.StreamGen` from a `.keras` file, safely and with clear errors.

    Keras' `safe_mode` stays on (no code in the file is run), and the
    archive is checked before Keras reads it.

    Args:
        path: str or path-like, a `.keras` file.

    Returns:
        The `sg.StreamGen`.

    Raises:
        NotAKerasModelError: the file is not an intact `.keras` archive,
            fails to load (the message keeps Keras' cause), or holds
            another kind of model.
    """
    path = os.fspath(path)
    check_archive(path)
    import_tensorflow()  # which registers streamgen's Keras classes (streamgen.quiet)
    import keras

    model_class = keras.saving.get_registered_object("streamgen>StreamGen")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many kinds for a bad file
        message = cause(error)
        if "could not be loaded" in message:  # weights that do not fit the config
            message = ("its config.json does not fit the weights stored with it "
                       f"(an edited or mixed-up file?): {message}")
        raise NotAKerasModelError(f"{path}: cannot load the model: {message}") from None
    if not isinstance(model, model_class):
        raise NotAKerasModelError(
            f"{path}: not a streamgen model (it holds a {type(model).__name__})")
    return model


def first_line(error):
    """The first line of an error's message, at most 200 characters."""
    text = str(error).strip().splitlines()
    text = text[0] if text else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def cause(error):
    """An error's message down to its root cause, as one line.

    Keras wraps the real failure of `from_config` ("Received an invalid
    value for argument `max_steps` ...") in a longer message; the root
    cause is what a user can act on. Its lines are joined (a first line
    that ends in ":" says nothing alone), terminal colour codes removed,
    and the result cut at 300 characters.
    """
    root = error
    while root.__cause__ is not None or root.__context__ is not None:
        root = root.__cause__ or root.__context__
    text = " ".join(line.strip() for line in strip_ansi(str(root)).splitlines() if line.strip())
    text = text or type(root).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def strip_ansi(text):
    """`text` without terminal colour codes (TensorFlow puts them in errors)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
