"""The README's Python example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_top_commands():
    text = README.read_text()
    top = text[: text.index("## In Python")]
    for command in ["make run", "make test", 'pip install -e ".[test]"',
                    "streamgen stream < samples/inputs.txt", "pytest"]:
        assert command in top


def test_readme_python_example_runs(capsys):
    example = python_blocks()[0]
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5
    for i, line in enumerate(printed):
        index, rows, width = re.fullmatch(r"(\d+) \((\d+), (\d+)\)", line).groups()
        assert int(index) == i and 0 <= int(rows) <= 9 and int(width) == 2
    assert namespace["rt"].shape.as_list() == [1, 5, None, 2]
    assert set(namespace["saved"]) == {"outer", "inner"}


def test_readme_training_example_runs(tmp_path, monkeypatch, capsys):
    """The training example, shortened to one epoch, saving under tmp_path."""
    (example,) = [b for b in python_blocks() if "sg.load_jsonl" in b]
    assert "epochs=30" in example and '"model.keras"' in example
    example = example.replace("epochs=30", "epochs=1")
    monkeypatch.chdir(README.parent)
    example = example.replace('"model.keras"', repr(str(tmp_path / "model.keras")))
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    figures = eval(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(figures) == {"length_accuracy", "length_mae", "frame_mse"}
    assert 0.0 <= figures["length_accuracy"] <= 1.0 and figures["frame_mse"] > 0.0

    import keras
    import numpy as np

    loaded = keras.models.load_model(tmp_path / "model.keras")
    x = np.stack(namespace["valid_inputs"][:1])
    expected = namespace["model"].decode(x)
    got = loaded.decode(x)
    np.testing.assert_array_equal(got.values.row_lengths(), expected.values.row_lengths())
    np.testing.assert_allclose(got.flat_values, expected.flat_values, atol=1e-6)


def test_readme_litert_example_runs(tmp_path, monkeypatch):
    """The LiteRT example runs as written and matches the TensorFlow path."""
    import numpy as np
    import pytest

    import streamgen as sg

    pytest.importorskip("ai_edge_litert")
    (example,) = [b for b in python_blocks() if "sg.LiteStream" in b]
    monkeypatch.chdir(tmp_path)  # it writes model.tflite
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    model, out, state = namespace["model"], namespace["out"], namespace["state"]
    expected_stream = model.open_stream(stop=sg.StopHead(0.7))
    expected = expected_stream.step(namespace["x"])
    assert out.shape == expected.shape and out.shape[1] == 2
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert set(state) == {"outer", "inner"}
    for key in state:
        for got, want in zip(state[key], expected_stream.get_state()[key]):
            np.testing.assert_allclose(got, want, atol=1e-5)
