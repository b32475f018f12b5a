"""streamgen: hierarchical streaming generation on TensorFlow + Keras 3.

An outer recurrent model (model_a) takes one input at a time and keeps its
state; for each outer step an inner decoder (model_b) emits a short,
variable-length `Out[i]`, ended by a STOP decision or a cap.

The names below are exported lazily (PEP 562): `import streamgen` does not
import TensorFlow, the first use of a name that needs it does (quietly), and
`sg.LiteStream` runs a `.tflite` export on numpy and ai-edge-litert alone.
To add a public name, add it to `_EXPORTS` (not as an import here).
"""

import importlib

from streamgen import quiet


def _register_keras_classes():
    # `@keras.saving.register_keras_serializable` runs on import.
    importlib.import_module("streamgen.model")


# TensorFlow / Keras import quietly, whoever imports them first; once both
# are in, streamgen's Keras classes are registered for `load_model`.
quiet.install(on_loaded=_register_keras_classes)

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "L2Norm": "streamgen.stopping",
    "LiteRuntime": "streamgen.runtimes.lite",
    "LiteStream": "streamgen.stream",
    "ModelFileError": "streamgen.errors",
    "NotAKerasModelError": "streamgen.errors",
    "NotAnExportError": "streamgen.errors",
    "Runtime": "streamgen.runtimes.base",
    "TFRuntime": "streamgen.runtimes.tf",
    "StopCriterion": "streamgen.stopping",
    "connect": "streamgen.remote.client",
    "decode_jsonl": "streamgen.offline.decode",
    "decode_sequences": "streamgen.offline.decode",
    "StopHead": "streamgen.stopping",
    "StopSample": "streamgen.stopping",
    "Stream": "streamgen.stream",
    "StreamGen": "streamgen.model",
    "evaluate": "streamgen.offline.decode",
    "jsonl_dataset": "streamgen.data.dataset",
    "default_model_path": "streamgen.default",
    "load_default": "streamgen.default",
    "load_model": "streamgen.saving",
    "load_jsonl": "streamgen.data.jsonl",
    "make_dataset": "streamgen.data.dataset",
    "open_runtime": "streamgen.runtimes",
    "read_records": "streamgen.data.jsonl",
    "save_jsonl": "streamgen.data.jsonl",
}
_WITHOUT_TENSORFLOW = {"streamgen.remote.client", "streamgen.data.jsonl", "streamgen.runtimes.lite",
                       "streamgen.offline.decode", "streamgen.runtimes.base",
                       "streamgen.runtimes", "streamgen.errors",
                       "streamgen.stream", "streamgen.default", "streamgen.randomness",
                       "streamgen.samplers"}
# Public submodules: `sg.samplers`.
_MODULES = {"samplers": "streamgen.samplers"}

__all__ = [
    "L2Norm",
    "LiteRuntime",
    "LiteStream",
    "ModelFileError",
    "NotAKerasModelError",
    "NotAnExportError",
    "Runtime",
    "StopCriterion",
    "StopHead",
    "StopSample",
    "Stream",
    "StreamGen",
    "TFRuntime",
    "connect",
    "decode_jsonl",
    "decode_sequences",
    "evaluate",
    "jsonl_dataset",
    "default_model_path",
    "load_default",
    "load_jsonl",
    "load_model",
    "make_dataset",
    "open_runtime",
    "read_records",
    "samplers",
    "save_jsonl",
]


def __getattr__(name):
    if name in _MODULES:  # a public submodule (it imports no TensorFlow)
        value = importlib.import_module(_MODULES[name])
        globals()[name] = value
        return value
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'streamgen' has no attribute {name!r}")
    if module_name not in _WITHOUT_TENSORFLOW:
        quiet.import_tensorflow()  # which registers the Keras classes
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_MODULES))
