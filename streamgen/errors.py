"""streamgen's own exception classes (a leaf module: it imports nothing of streamgen).

All are `ValueError`s, so that code catching bad input keeps working; each
message names the file or the argument and what was wrong with it.
"""


class ModelFileError(ValueError):
    """A file that cannot be opened as a streamgen model.

    Subclasses say what kind of file was expected. The message names the
    file and what was wrong with it.
    """


class NotAnExportError(ModelFileError):
    """A `.tflite` file that is not an intact streamgen LiteRT export."""


class NotAKerasModelError(ModelFileError):
    """A `.keras` file that is not an intact, loadable `sg.StreamGen`."""
