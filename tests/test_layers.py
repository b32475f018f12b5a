"""The package's layers (docs/design.md, "Layers"): read with `ast`, lazy imports included.

- every import inside `streamgen` goes to the same layer or a lower one;
- the import graph has no cycle;
- no module uses a private (`_`) name of another package;
- the CLI (`cli/`) uses public names only, and nothing in `streamgen` imports it.
"""

import ast
import fnmatch
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first. A module may import modules of its own layer or of lower ones.
LAYERS = [
    ("base", ["streamgen.errors", "streamgen.checks", "streamgen.quiet", "streamgen.outputs",
              "streamgen.criteria",
              "streamgen.randomness", "streamgen.values"]),
    ("kernel", ["streamgen.stopping", "streamgen.samplers", "streamgen.losses", "streamgen.mdn",
                "streamgen.saving", "streamgen.data.ragged", "streamgen.data.text"]),
    ("runtimes", ["streamgen.runtimes.*"]),
    ("model", ["streamgen.stream", "streamgen.model", "streamgen.default",
               "streamgen.runtimes"]),
    ("uses", ["streamgen.data", "streamgen.data.*", "streamgen.offline", "streamgen.offline.*",
              "streamgen.remote", "streamgen.remote.*", "streamgen.training",
              "streamgen.training.*"]),
    ("serve", ["streamgen.serve", "streamgen.serve.*"]),
    ("top", ["streamgen"]),
]


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name):
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return rank
    raise AssertionError(f"{name} is in no layer of LAYERS: add it")


MODULES = {module_name(p): p for p in sorted((ROOT / "streamgen").rglob("*.py"))}


def package_of(name):
    """The package a module belongs to: `streamgen.runtimes.tf` -> `streamgen.runtimes`."""
    path = MODULES[name]
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def imports(path):
    """`(line, module, names)` for every import in a file, lazy ones included.

    `module` is the streamgen module imported; `names` are the names taken
    from it by `from ... import` (a name that is itself a module counts as
    an import of that module).
    """
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "streamgen":
                    found.append((node.lineno, alias.name, []))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "streamgen":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child in MODULES or child == "streamgen.cli":
                    found.append((node.lineno, child, []))
                else:
                    found.append((node.lineno, node.module, [alias.name]))
    return found


def private_attributes(path):
    """`(line, alias, attribute)` for `alias._name` where `alias` is an imported module."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child in MODULES:
                    aliases[alias.asname or alias.name] = child
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    return [(node.lineno, aliases[node.value.id], node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in aliases and node.attr.startswith("_")
            and not node.attr.startswith("__")]


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_upward_import():
    wrong = []
    for name, found in GRAPH.items():
        for line, target, _ in found:
            if target == "streamgen.cli":
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports the CLI")
            elif target in MODULES and layer_of(target) > layer_of(name):
                wrong.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {target} "
                             f"({LAYERS[layer_of(target)][0]} above {LAYERS[layer_of(name)][0]})")
    assert not wrong, "\n".join(wrong)


def test_no_cycle():
    edges = {name: {t for _, t, _ in found if t in MODULES and t != name}
             for name, found in GRAPH.items()}
    edges.pop("streamgen", None)  # the lazy facade imports everything and nothing imports it
    for targets in edges.values():
        targets.discard("streamgen")
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_private_name_across_packages():
    wrong = []
    for name, found in GRAPH.items():
        here = package_of(name)
        where = MODULES[name].relative_to(ROOT)
        for line, target, names in found:
            if target not in MODULES or package_of(target) == here:
                continue
            if target.rsplit(".", 1)[-1].startswith("_"):
                wrong.append(f"{where}:{line} imports the private module {target}")
            wrong += [f"{where}:{line} imports {target}.{n}" for n in names if n.startswith("_")]
        for line, target, attribute in private_attributes(MODULES[name]):
            if package_of(target) != here:
                wrong.append(f"{where}:{line} uses {target}.{attribute}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sorted((ROOT / "cli").glob("*.py")), ids=lambda p: p.name)
def test_cli_uses_public_names_only(path):
    wrong = []
    for line, target, names in imports(path):
        if target.startswith("streamgen.cli"):
            continue
        if any(part.startswith("_") for part in target.split(".")):
            wrong.append(f"{path.name}:{line} imports the private module {target}")
        wrong += [f"{path.name}:{line} imports {target}.{n}" for n in names if n.startswith("_")]
    for line, target, attribute in private_attributes(path):
        if not target.startswith("streamgen.cli"):
            wrong.append(f"{path.name}:{line} uses {target}.{attribute}")
    assert not wrong, "\n".join(wrong)
