"""`StreamGen.export_litert`: the file, its metadata, its ops."""

import sys

import numpy as np
import pytest

import streamgen as sg
from helpers import make_model
from streamgen.runtimes import export as export_lib
from streamgen.runtimes import lite as lite_lib
from streamgen.runtimes import tf as tf_runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An LSTM carry model with two criteria, exported: `(model, path, metadata)`."""
    model = make_model("lstm", "carry", seed=4, max_steps=6)
    path = str(tmp_path_factory.mktemp("export") / "model.tflite")
    metadata = model.export_litert(path, stop=[sg.StopHead(0.6), sg.L2Norm(3.0, "above")])
    return model, path, metadata


def test_metadata_describes_the_model(exported):
    model, path, metadata = exported
    with open(path, "rb") as file:
        stored = lite_lib.read_metadata(file.read())
    assert stored == metadata
    assert {k: stored[k] for k in ("format", "version", "input_size", "output_size",
                                   "max_steps", "outer_state_sizes", "inner_state_sizes",
                                   "decoder_state", "cell", "inner_loop")} == {
        "format": "streamgen-litert", "version": 5, "input_size": 3, "output_size": 2,
        "max_steps": 6, "outer_state_sizes": [8, 8], "inner_state_sizes": [8, 8],
        "decoder_state": "carry", "cell": "lstm", "inner_loop": "unrolled",
    }
    assert stored["criteria"] == [
        {"class_name": "StopHead", "config": {"threshold": 0.6}},
        {"class_name": "L2Norm", "config": {"threshold": 3.0, "mode": "above"}},
    ]
    assert stored["inputs"]["state"] == "state"  # (B, 8 + 8 + 8 + 8), packed
    assert stored["outputs"] == {"frames": "output_0", "lengths": "output_1", "state": "output_2"}
    assert stored["fingerprint"] == model.fingerprint()
    with open(path, "rb") as file:  # the digest covers the whole file
        assert lite_lib.digest_of(file.read()) == (stored["digest"], stored["digest"])


def ops_used(path):
    """The set of builtin operator names a `.tflite` file uses."""
    schema = lite_lib.import_schema()
    with open(path, "rb") as file:
        root = schema.Model.GetRootAs(file.read(), 0)
    codes = {name: value for name, value in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
    names = {value: name for name, value in codes.items()}
    used = set()
    for index in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(index)
        used.add(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return used


def test_only_builtin_ops_and_no_variables(exported):
    _, path, _ = exported
    used = ops_used(path)
    assert "CUSTOM" not in used  # Flex (Select TF ops) would appear as custom ops
    assert not used & {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
    # max_steps 6 <= UNROLL_MAX_STEPS: the inner steps are unrolled, no loop.
    assert "FULLY_CONNECTED" in used and "WHILE" not in used
    # One signature, batch dimension dynamic.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    signature = interpreter.get_signature_list()[lite_lib.SIGNATURE]
    assert sorted(signature["inputs"]) == ["caps", "generate", "params", "state", "thresholds",
                                           "uniforms", "x"]
    details = interpreter.get_signature_runner(lite_lib.SIGNATURE).get_input_details()
    assert list(details["x"]["shape_signature"]) == [-1, 3]
    assert list(details["state"]["shape_signature"]) == [-1, 36]  # LSTM: 2 x (8 + 8), seed, position
    assert list(details["thresholds"]["shape_signature"]) == [-1, 4]  # per row: 4 built-in kinds
    assert list(details["caps"]["shape_signature"]) == [-1]


def test_the_greedy_step_is_a_second_model_in_the_file(exported, tmp_path):
    """Format 5: the metadata entry `GREEDY_NAME` holds the greedy step, a
    `.tflite` model of its own: the full step's inputs but `params` and
    `uniforms`, builtin ops only, and fewer operators (no draws and no
    `StopSample` test), which is what makes a greedy call cheaper."""
    from ai_edge_litert.interpreter import Interpreter

    _, path, _ = exported
    with open(path, "rb") as file:
        content = file.read()
    greedy = lite_lib.metadata_entry(content, lite_lib.GREEDY_NAME)
    assert greedy[4:8] == b"TFL3"
    greedy_path = tmp_path / "greedy.tflite"
    greedy_path.write_bytes(greedy)
    assert "CUSTOM" not in ops_used(str(greedy_path))
    signature = Interpreter(model_content=greedy).get_signature_list()[lite_lib.SIGNATURE]
    assert sorted(signature["inputs"]) == ["caps", "generate", "state", "thresholds", "x"]
    assert sorted(signature["outputs"]) == ["output_0", "output_1", "output_2"]
    schema = lite_lib.import_schema()
    operators = [schema.Model.GetRootAs(c, 0).Subgraphs(0).OperatorsLength()
                 for c in (content, greedy)]
    assert operators[1] < operators[0], operators


def test_exported_thresholds_are_the_defaults(exported):
    model, path, _ = exported
    x = np.random.default_rng(2).normal(size=(40, 2, 3)).astype(np.float32)
    lite_stream = sg.LiteStream(path)
    tf_stream = model.open_stream(stop=[sg.StopHead(0.6), sg.L2Norm(3.0, "above")])
    for t in range(40):
        for a, b in zip(lite_stream.step(x[t]), tf_stream.step(x[t])):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow  # two LiteRT conversions and training (~9 s)
def test_export_uses_the_current_weights(tmp_path):
    model = make_model("gru", "reset", seed=7)
    first, second = str(tmp_path / "a.tflite"), str(tmp_path / "b.tflite")
    model.export_litert(first, stop=[])  # the cap alone: 9 frames each
    x = np.ones((1, 3), np.float32)
    before = sg.LiteStream(first).step(x)[0]
    model.frame_head.set_weights([w + 0.5 for w in model.frame_head.get_weights()])
    model.export_litert(second, stop=[])
    after, expected = sg.LiteStream(second).step(x)[0], model.open_stream(stop=[]).step(x)[0]
    assert after.shape == expected.shape == (9, 2)
    np.testing.assert_allclose(after, expected, atol=1e-5)
    assert not np.allclose(before, after)


@pytest.mark.slow  # a LiteRT conversion (~4 s)
def test_loaded_model_exports(tmp_path):
    model = make_model("simple_rnn", "carry", seed=8)
    keras_path, tflite_path = str(tmp_path / "m.keras"), str(tmp_path / "m.tflite")
    model.save(keras_path)
    import keras

    loaded = keras.saving.load_model(keras_path)
    loaded.export_litert(tflite_path)
    x = np.random.default_rng(3).normal(size=(20, 3)).astype(np.float32)
    for a, b in zip(sg.LiteStream(tflite_path).feed(x), model.stream(x)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_missing_litert_is_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    with pytest.raises(ImportError, match=r"pip install ai-edge-litert \(or, in a streamgen "
                                          r"checkout, pip install -e '\.\[litert\]'\)"):
        make_model("gru", "reset").export_litert(str(tmp_path / "m.tflite"))
    with pytest.raises(ImportError, match=r"need the `ai-edge-litert` package"):
        sg.LiteStream(str(tmp_path / "m.tflite"))
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow  # a LiteRT conversion (~4 s)
def test_export_litert_function_is_the_method(tmp_path):
    model = make_model("gru", "carry", seed=9)
    metadata = export_lib.export_litert(model, str(tmp_path / "f.tflite"), stop=[])
    assert metadata["criteria"] == []
    s = sg.LiteStream(str(tmp_path / "f.tflite"))
    # The cap alone: every output has max_steps frames.
    assert [len(s.step(x)) for x in np.zeros((3, 3))] == [9, 9, 9]


@pytest.mark.slow  # a LiteRT conversion (~4 s)
def test_large_max_steps_exports_a_while_loop(tmp_path):
    """Above UNROLL_MAX_STEPS the file loops (and stops early) instead."""
    model = make_model("gru", "carry", seed=6, max_steps=tf_runtime.UNROLL_MAX_STEPS + 1)
    path = str(tmp_path / "long.tflite")
    assert model.export_litert(path)["inner_loop"] == "while"
    assert {"WHILE", "FULLY_CONNECTED"} <= ops_used(path)
    x = np.random.default_rng(4).normal(size=(30, 2, 3)).astype(np.float32)
    lite_stream, tf_stream = sg.LiteStream(path), model.open_stream()
    lengths = set()
    for t in range(30):
        for a, b in zip(lite_stream.step(x[t]), tf_stream.step(x[t])):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-5)
            lengths.add(len(a))
    assert len(lengths) >= 3, lengths


@pytest.mark.slow  # four LiteRT conversions (~14 s)
def test_per_row_caps_and_thresholds_equal_the_tensorflow_step(core_models, tmp_path,
                                                               monkeypatch):
    """The file's per-row `caps` (0 included: no inner step runs) and
    `thresholds` give the TensorFlow step's results, for both loop
    structures."""
    rng = np.random.default_rng(8)
    caps = np.array([0, 0, 1, 3, 6, 6], np.int32)
    head = np.array([[0.5], [0.5], [0.2], [0.5], [0.9], [0.02]], np.float32)
    l2 = np.array([[np.inf, -np.inf], [np.inf, -np.inf], [0.8, -np.inf], [np.inf, 0.3],
                   [np.inf, -np.inf], [1.0, 0.2]], np.float32)  # L2Norm above, below
    sample = np.array([[np.inf], [1.0], [np.inf], [0.5], [2.0], [np.inf]], np.float32)
    thresholds = np.concatenate([head, l2, sample], axis=1)  # (6, 4): any mix per row
    decode = np.array([True, False, True, True, True, True])
    for mode in ("reset", "carry"):
        model = core_models[("lstm", mode)]
        x = rng.normal(size=(6, 3)).astype(np.float32)
        state = rng.normal(size=(6, 36)).astype(np.float32)
        state[:, -4:] = rng.integers(0, 65536, size=(6, 4))  # seeds and positions
        expected = sg.open_runtime(model).step(x, state, decode, thresholds, caps)
        assert expected[1][:2].tolist() == [0, 0] and not expected[0][:2].any()
        for unroll in (tf_runtime.UNROLL_MAX_STEPS, 0):
            monkeypatch.setattr(tf_runtime, "UNROLL_MAX_STEPS", unroll)
            path = str(tmp_path / f"{mode}_{unroll}.tflite")
            loop = model.export_litert(path)["inner_loop"]
            assert loop == ("unrolled" if unroll else "while")
            got = sg.open_runtime(path).step(x, state, decode, thresholds, caps)
            assert got[1].tolist() == expected[1].tolist(), f"{mode}, {loop}"
            np.testing.assert_allclose(got[0], expected[0], atol=1e-5, err_msg=f"{mode}, {loop}")
            np.testing.assert_allclose(got[2], expected[2], atol=1e-5, err_msg=f"{mode}, {loop}")


@pytest.mark.slow  # a LiteRT conversion (~4 s)
def test_export_and_lite_stream_print_nothing(tmp_path, capfd):
    """No LiteRT or converter line on stdout/stderr (LiteRT logs its XNNPACK
    line once per process, so `test_subprocess` checks a fresh process)."""
    model = make_model("gru", "reset", seed=2)
    path = str(tmp_path / "quiet.tflite")
    capfd.readouterr()
    model.export_litert(path)
    stream = sg.LiteStream(path)
    stream.step(np.zeros(3))
    assert capfd.readouterr() == ("", "")


def test_the_export_has_the_steps_inputs():
    """One signature: the `.tflite` inputs are the compiled step's, in order."""
    from streamgen.runtimes import lite

    assert lite.INPUT_NAMES == tf_runtime.STEP_INPUTS
