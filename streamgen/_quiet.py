"""Import TensorFlow without the C++ log lines it prints on import.

TensorFlow 2.21 writes absl log lines ("oneDNN custom operations are on",
"Could not find cuda drivers") to file descriptor 2 before
`TF_CPP_MIN_LOG_LEVEL` is read, so the variable alone does not silence them.
We set the variable (for later messages) and point fd 2 at `/dev/null`
for the duration of the import only. If TensorFlow is already imported this
is a no-op; an import error is re-raised after stderr is restored.
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
