"""Import TensorFlow without the C++ log lines it prints on import.

TensorFlow 2.21 writes absl log lines ("oneDNN custom operations are on",
"Could not find cuda drivers") to file descriptor 2 before
`TF_CPP_MIN_LOG_LEVEL` is read, so the variable alone does not silence them.
We set the variable (for later messages) and point fd 2 at `/dev/null`
for the duration of the import only. If TensorFlow is already imported this
is a no-op; an import error is re-raised after stderr is restored.

`install()` (called by `streamgen/__init__.py`) puts a finder on
`sys.meta_path` that does the same for whoever first imports `tensorflow` or
`keras`: `import streamgen` itself no longer imports TensorFlow (so that
`streamgen.lite` runs without it), and `import streamgen; import keras`
stays as quiet as it was. Nothing in this module imports TensorFlow.
"""

import os
import sys


def import_tensorflow():
    """Returns the `tensorflow` module, imported quietly."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        import tensorflow

        return tensorflow
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow
        import keras  # noqa: F401  (its first import logs too)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tensorflow


class _QuietLoader:
    """Wraps a module loader; its `exec_module` runs with fd 2 silenced."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            with silenced_fd2():
                self._loader.exec_module(module)
        finally:  # later look-ups see the real loader
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader
        _run_loaded_callbacks(executed=module.__name__)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietFinder:
    """A `sys.meta_path` finder that makes the first import of TensorFlow
    (or Keras, which imports it) quiet, whoever imports it and in whatever
    order: `import streamgen` no longer imports TensorFlow itself (so that
    `streamgen.lite` runs without it), and `import streamgen; import keras`
    must stay as quiet as it was."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in ("tensorflow", "keras") or fullname in sys.modules:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install(on_loaded=None):
    """Installs `_QuietFinder` once (idempotent).

    Args:
        on_loaded: optional callable with no arguments, called once, as soon
            as both `tensorflow` and `keras` are fully imported (at once if
            they already are). `streamgen` uses it to register its Keras
            classes, so that `import streamgen; import keras;
            keras.models.load_model(...)` finds them.
    """
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
    if on_loaded is not None and on_loaded not in _LOADED_CALLBACKS:
        _LOADED_CALLBACKS.append(on_loaded)
        _run_loaded_callbacks()


_LOADED_CALLBACKS = []


def _fully_imported(name, executed):
    module = sys.modules.get(name)
    if module is None:
        return False
    if name == executed:  # its `exec_module` just returned
        return True
    return not getattr(getattr(module, "__spec__", None), "_initializing", False)


def _run_loaded_callbacks(executed=None):
    """Runs (and forgets) the `on_loaded` callbacks once TF and Keras are in.

    Args:
        executed: the name of the module whose `exec_module` just returned
            (its import is still marked as in progress).
    """
    if not all(_fully_imported(name, executed) for name in ("tensorflow", "keras")):
        return
    while _LOADED_CALLBACKS:
        _LOADED_CALLBACKS.pop(0)()


class silenced_fd2:
    """Context manager: fd 2 points at /dev/null (no-op without an fd 2)."""

    def __enter__(self):
        self._saved = None
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
            return self
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def __exit__(self, *exc_info):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        return False
