"""The README's Python example runs as written."""

import pathlib
import re

import pytest

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
    assert set(namespace["saved"]) == {"outer", "inner", "random"}


@pytest.mark.slow  # trains a model
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


@pytest.mark.slow  # a LiteRT conversion (~5 s)
def test_readme_litert_example_runs(tmp_path, monkeypatch):
    """The LiteRT example runs as written and matches the TensorFlow path."""
    import numpy as np
    import pytest

    import streamgen as sg

    pytest.importorskip("ai_edge_litert")
    (example,) = [b for b in python_blocks() if "lite = sg.LiteStream(" in b
                  and "export_litert" in b]
    monkeypatch.chdir(tmp_path)  # it writes model.tflite
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    model, out, state = namespace["model"], namespace["out"], namespace["state"]
    expected_stream = model.open_stream(stop=sg.StopHead(0.7))
    expected = expected_stream.step(namespace["x"])
    assert out.shape == expected.shape and out.shape[1] == 2
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert set(state) == {"outer", "inner", "random"}
    for key in ("outer", "inner"):  # "random": each stream's own seed
        for got, want in zip(state[key], expected_stream.get_state()[key]):
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_readme_runtime_example_runs():
    """The runtime example: three rows of a table stepped with their own
    options equal three streams opened with those options."""
    import numpy as np

    import streamgen as sg

    (example,) = [b for b in python_blocks() if "sg.open_runtime" in b]
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    model, table, outs = namespace["model"], namespace["table"], namespace["outs"]
    stops = [[sg.StopHead(0.3)], [sg.L2Norm(2.0)], []]
    for row, stop, cap, out in zip((3, 17, 42), stops, (9, 4, 9), outs):
        # the table's rows have seed 0 (`initial_state(n)`)
        stream = model.open_stream(stop=stop, max_steps=cap, seed=0)
        expected = stream.step(np.zeros(3, "float32"))
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, atol=1e-5)
        np.testing.assert_allclose(table[row], namespace["runtime"].pack(stream.get_state())[0],
                                   atol=1e-5)
    assert not table[0].any()  # rows not stepped keep their state
    assert set(namespace["nest"]) == {"outer", "inner", "random"}


# ---------------------------------------------------------------------- #
# What the README points at exists (issue 11, items 11-13).
# ---------------------------------------------------------------------- #
ROOT = README.parent
FOLDERS = ("benchmarks", "cli", "docs", "samples", "streamgen", "tests")  # the repo's own


def test_readme_links_exist():
    text = README.read_text()
    headings = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert "docs/design.md" in links  # the design notes are linked
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        if link.startswith("#"):
            assert link[1:] in headings, link
        else:
            assert (ROOT / link.split("#")[0]).exists(), link


def test_readme_file_paths_exist():
    """Every path into the repo's folders that the README names, in text or
    code, exists (`samples/inputs.txt`, `tests/test_stopping.py`, ...), and
    so does every file of the Layout section's tree."""
    text = README.read_text()
    pattern = r"(?<![\w./-])((?:%s)/[\w./-]*[\w/])" % "|".join(FOLDERS)
    paths = set(re.findall(pattern, text))
    assert {"samples/inputs.txt", "docs/design.md", "streamgen/default_model.keras"} <= paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == []
    layout = text[text.index("## Layout"):]
    tree = re.search(r"```\n(.*?)```", layout, flags=re.S).group(1)
    folder = None
    for line in tree.splitlines():
        top = re.match(r"(\w[\w.-]*)/\s", line)
        if top:
            folder = top.group(1)
            assert (ROOT / folder).is_dir(), folder
            continue
        entry = re.match(r"\s+([\w.-]+\.\w+)\s", line)
        if entry:
            assert (ROOT / folder / entry.group(1)).exists(), f"{folder}/{entry.group(1)}"


def documentation_and_code():
    files = [README, ROOT / "samples" / "README.md", ROOT / "benchmarks" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += sorted((ROOT / "cli").glob("*.py")) + sorted((ROOT / "streamgen").rglob("*.py"))
    files += sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "samples").glob("*.py"))
    return files


def test_installs_come_from_the_checkout():
    """`pip install "streamgen[plot]"` would fetch an unrelated package of
    that name from the registry: only installs from the checkout are shown."""
    registry = re.compile(r"pip install\s+['\"]?streamgen\b")
    offenders = [f"{path.relative_to(ROOT)}: {line.strip()}"
                 for path in documentation_and_code()
                 for line in path.read_text().splitlines() if registry.search(line)]
    assert offenders == []
    assert 'pip install -e ".[plot]"' in README.read_text()


def test_design_notes_are_in_the_repository():
    old = "DESIGN" + ".md"  # (spelled so that this file does not match itself)
    offenders = [str(path.relative_to(ROOT)) for path in documentation_and_code()
                 if old in path.read_text()]
    assert offenders == []
    notes = (ROOT / "docs" / "design.md").read_text()
    for heading in ("## The problem", "## STOP semantics", "## Decoding and the runtime layer",
                    "## State as a value", "## Serving many streams", "## Data at scale"):
        assert heading in notes
    assert "../" + "shared" not in notes  # (spelled so that this file does not match)


def test_readme_says_how_to_reach_the_command_and_quiet_tensorflow():
    text = README.read_text()
    assert "source .venv/bin/activate" in text and "`.venv/bin/streamgen`" in text
    assert "STREAMGEN_QUIET_TF=1" in text and "TF_CPP_MIN_LOG_LEVEL=3" in text
    samples = (ROOT / "samples" / "README.md").read_text()
    assert "sg.load_jsonl(" in samples and "streamgen.data.dataset.load_jsonl" not in samples


def test_readme_agrees_with_itself():
    text = " ".join(README.read_text().split())
    # Time to the first output of `stream --model m.tflite`: one figure.
    passages = re.findall(r"[^.]*first output[^.]*\.[^.]*", text)
    assert len(passages) >= 2
    for passage in passages:
        assert "0.2 s" in passage and "5 s" in passage, passage
    # frame_mse (free-running) vs val_frame_loss (teacher-forced) is explained.
    explanation = text[text.index("`frame_mse` (0.18 above)"):][:700]
    assert "teacher-forced" in explanation and "free-running" in explanation
