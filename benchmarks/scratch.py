"""A benchmark's scratch folder, removed when the script exits.

The scripts write their data, exports and outputs under a fresh temporary
folder; `folder(prefix)` makes it and registers its removal at exit, so a
run (a test's included) leaves nothing behind in the temp folder.
"""

import atexit
import shutil
import tempfile


def folder(prefix):
    """A new temporary folder named `prefix...`, removed at exit: its path."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
