"""TensorFlow's import noise: quiet for the CLI and the server, opt-in for
the library, and streamgen's Keras classes registered whoever imports Keras.

TensorFlow 2.21 writes absl log lines ("oneDNN custom operations are on",
"Could not find cuda drivers") to file descriptor 2 while it is imported,
before `TF_CPP_MIN_LOG_LEVEL` is read, so the variable alone does not
silence them. The one way to quiet them is to point fd 2 at `/dev/null`
for the duration of the import (`silenced_fd2`) — which would also hide a
host program's real CUDA or XLA errors. So:

- the `streamgen` command and server call `enable()` first: their users
  see only streamgen's own lines;
- the library quiets the import only when asked: `STREAMGEN_QUIET_TF=1` in
  the environment (or `enable()` called) before TensorFlow is imported.

`install()` (called by `streamgen/__init__.py`) puts a finder on
`sys.meta_path` that wraps the first import of `tensorflow` / `keras`,
whoever does it: it applies that rule (one mechanism for every import
order), and registers streamgen's Keras classes as soon as both are in, so
that `import streamgen; import keras; keras.models.load_model(p)` finds
them. `import streamgen` itself does not import TensorFlow (so that
`streamgen.runtimes.lite` runs without it). Nothing in this module imports it.
"""

import contextlib
import os
import sys

_ENABLED = False


def enable():
    """Quiets TensorFlow's import from now on (entry points call this first)."""
    global _ENABLED
    _ENABLED = True


def requested():
    """Whether TensorFlow's import is to be quiet: `enable()` or the variable."""
    value = os.environ.get("STREAMGEN_QUIET_TF", "").strip().lower()
    return _ENABLED or value in ("1", "true", "yes", "on")


def import_tensorflow():
    """Returns the `tensorflow` module, importing it (and Keras) if needed.

    Quiet when `requested()`; the finder of `install()` does the quieting.
    """
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return sys.modules["tensorflow"]
    install()
    import tensorflow
    import keras  # noqa: F401  (its first import logs too)

    return tensorflow


class _Loader:
    """Wraps a module loader: quiet when requested, then the callbacks."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        quiet = requested()
        if quiet:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            with silenced_fd2() if quiet else contextlib.nullcontext():
                self._loader.exec_module(module)
        finally:  # later look-ups see the real loader
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader
        _run_loaded_callbacks(executed=module.__name__)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder:
    """A `sys.meta_path` finder for the first import of TensorFlow / Keras."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in ("tensorflow", "keras") or fullname in sys.modules:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def install(on_loaded=None):
    """Installs `_Finder` once (idempotent).

    Args:
        on_loaded: optional callable with no arguments, called once, as soon
            as both `tensorflow` and `keras` are fully imported (at once if
            they already are). `streamgen` uses it to register its Keras
            classes.
    """
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
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
    """Context manager: fd 2 points at /dev/null (no-op without an fd 2).

    Used for TensorFlow's import when `requested()`, and around LiteRT's
    interpreter set-up, which logs "Created TensorFlow Lite XNNPACK delegate
    for CPU." on every first plan (an info line, not an error).
    """

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
