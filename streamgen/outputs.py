"""Outputs that are complete or absent, and never an input.

- `check_not_input(output, inputs)`: refuses an output that is one of the
  inputs (the same file through any path, symlink or hard link), or, for a
  folder, one that holds an input.
- `AtomicText(path)`: a text file written to a temporary file beside
  `path` and renamed over it at the end (`commit`); `discard` (or any
  exception in a `with` block, `KeyboardInterrupt` included) removes the
  temporary file and leaves `path` as it was.
- `AtomicFolder(path, overwrite)`: the same for a folder of shards.
- `creation_mode(mode)`: `mode` as the umask lets `open` create it
  (`tempfile` creates files 0600 and folders 0700, whatever the umask).

Every `OSError` raised here names the path. Nothing here imports
TensorFlow.
"""

import contextlib
import os
import shutil
import tempfile

__all__ = ["AtomicFolder", "AtomicText", "check_not_input", "creation_mode", "same_file"]


def creation_mode(mode=0o666):
    """`mode` less the process umask: what `open()` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _identity(path):
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def same_file(a, b):
    """True when `a` and `b` name one existing file (symlinks and hard links too)."""
    first = _identity(a)
    return first is not None and first == _identity(b)


def check_not_input(output, inputs, folder=False):
    """Raises `ValueError` if writing `output` could touch one of `inputs`.

    Args:
        output: the output path.
        inputs: the input file names (globs already expanded; `"-"` is
            standard input and never clashes).
        folder: `output` is a folder that will be cleared or replaced: an
            input anywhere inside it clashes too.
    """
    files = [path for path in inputs if path != "-"]
    if not folder:
        for path in files:
            if same_file(output, path):
                raise ValueError(f"{output!r} is the input {path!r}; "
                                 "write the output to another file.")
        return
    target = _identity(output)
    if target is None:
        return
    for path in files:
        parent = os.path.dirname(os.path.abspath(path))
        while True:  # every folder above the input, through its real path too
            if _identity(parent) == target:
                raise ValueError(f"{output!r} holds the input {path!r}; "
                                 "write the output to another folder.")
            above = os.path.dirname(parent)
            if above == parent:
                break
            parent = above
        real = os.path.realpath(path)
        if os.path.commonpath([real, os.path.realpath(output)]) == os.path.realpath(output):
            raise ValueError(f"{output!r} holds the input {path!r}; "
                             "write the output to another folder.")


class _CommitOnExit:
    """A context manager that commits on a clean exit and discards on an error."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.commit()
        else:
            self.discard()


class AtomicText(_CommitOnExit):
    """A text file that appears at `path` whole, or not at all.

    Written to a temporary file `.NAME.XXXX.tmp` in `path`'s folder (made
    with the umask's mode, as `open` would), renamed over `path` by
    `commit`. Until then `path` keeps its old content; `discard` removes
    the temporary file.

    Args:
        path: the output file.

    Raises:
        OSError: the folder is missing or not writable; the message names
            `path`.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        folder, name = os.path.split(os.path.abspath(self.path))
        try:
            handle, self.temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp",
                                                      dir=folder)
        except OSError as error:
            raise _named(error, self.path, "cannot write") from None
        try:
            os.fchmod(handle, creation_mode())
            self.file = os.fdopen(handle, "w", encoding="utf-8")
        except BaseException:
            os.close(handle)
            self._remove()
            raise

    def write(self, text):
        try:
            return self.file.write(text)
        except OSError as error:
            raise _named(error, self.path, "cannot write") from None

    def flush(self):
        try:
            self.file.flush()
        except OSError as error:
            raise _named(error, self.path, "cannot write") from None

    def commit(self):
        """Flushes, syncs and renames the temporary file over `path`."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.temporary, self.path)
        except OSError as error:
            self.discard()
            raise _named(error, self.path, "cannot write") from None

    def discard(self):
        """Removes the temporary file; `path` is left as it was."""
        with contextlib.suppress(OSError):
            self.file.close()
        self._remove()

    def _remove(self):
        with contextlib.suppress(OSError):
            os.remove(self.temporary)


class AtomicFolder(_CommitOnExit):
    """A folder that appears at `path` whole, or not at all.

    Files go into a temporary folder `.NAME.XXXX.tmp` beside `path`;
    `commit` renames it to `path` (after removing the old `path` when
    `overwrite`); `discard` removes it. The old `path` stays as it was
    until `commit`.

    Args:
        path: the output folder.
        overwrite: replace a non-empty `path`; without it, a non-empty
            `path` is a `ValueError` (an empty one is replaced).

    Raises:
        ValueError: `path` is a file, or a non-empty folder without
            `overwrite`.
        OSError: the parent folder cannot be written (naming `path`).
    """

    def __init__(self, path, overwrite=False):
        self.path = os.path.abspath(os.fspath(path))
        self.overwrite = overwrite
        check_folder(self.path, overwrite)
        parent, name = os.path.split(self.path)
        try:
            self.temporary = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent)
            os.chmod(self.temporary, creation_mode(0o777))
        except OSError as error:
            raise _named(error, self.path, "cannot write") from None

    def commit(self):
        try:
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                if os.listdir(self.path):
                    shutil.rmtree(self.path)
                else:
                    os.rmdir(self.path)
            os.replace(self.temporary, self.path)
        except OSError as error:
            self.discard()
            raise _named(error, self.path, "cannot write") from None

    def discard(self):
        shutil.rmtree(self.temporary, ignore_errors=True)


def check_folder(path, overwrite=False):
    """Raises `ValueError` unless `path` can become an output folder."""
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"{path!r} is a file, not a folder.")
    if os.path.islink(path):
        raise ValueError(f"{path!r} is a symbolic link; name the folder itself.")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(f"{path!r} is not empty; pass --overwrite to replace it "
                         "(overwrite=True).")


class PathError(OSError):
    """An `OSError` whose `str` is one line naming the path (no `[Errno N]`)."""

    def __str__(self):
        return self.strerror


def _named(error, path, what):
    """`error` as a `PathError` whose message names `path`."""
    if isinstance(error, PathError):
        return error
    reason = error.strerror or str(error)
    return PathError(error.errno, f"{path}: {what}: {reason}")
