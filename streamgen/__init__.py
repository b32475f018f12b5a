"""streamgen: hierarchical streaming generation on TensorFlow + Keras 3.

An outer recurrent model (model_a) takes one input at a time and keeps its
state; for each outer step an inner decoder (model_b) emits a short,
variable-length `Out[i]`, ended by a STOP decision or a cap.
"""

from streamgen._quiet import import_tensorflow

import_tensorflow()  # before anything else imports TensorFlow: keeps stderr clean

from streamgen.model import StreamGen  # noqa: E402
from streamgen.stopping import L2Norm, StopCriterion, StopHead  # noqa: E402
from streamgen.stream import Stream  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "L2Norm",
    "StopCriterion",
    "StopHead",
    "Stream",
    "StreamGen",
]
