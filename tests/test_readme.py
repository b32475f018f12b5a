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
