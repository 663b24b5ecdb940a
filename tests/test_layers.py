"""The modules of sendit form layers that only point down: no import cycle, not even one hidden in a
function-local import (those only postpone the cycle to the first call, and hide which module is above)."""
import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"


def module_files(root: Path = SOURCE / "sendit") -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__.py)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The sendit modules `module` imports anywhere in its file (top level, functions, TYPE_CHECKING).

    `from a import b` imports the module a.b when there is one, else a's __init__; `import a.b`
    imports a.b; relative imports are resolved against the module's package.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {name for name in found if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {module: imported(module, path, modules) for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, modules in sorted order)."""
    state = {}  # module -> "open" while on the current path, "done" once fully explored
    path = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("source, expected", [
    ("from sendit.data import prepare", {"sendit.data.prepare"}),  # a submodule by name
    ("from sendit.data import DataError", {"sendit.data"}),  # a name from the package's __init__
    ("import sendit.data.split", {"sendit.data.split"}),
    ("from .split import stratified_sample", {"sendit.data.split"}),
    ("from . import clean", {"sendit.data.clean"}),
    ("from .. import io", {"sendit.io"}),
    ("def f():\n    from sendit.run import load", {"sendit.run"}),  # hidden in a function
    ("from sendit.data.sources import read_source", set()),  # itself
    ("import numpy\nfrom pandas import DataFrame", set()),
])
def test_imports_are_resolved(tmp_path, source, expected):
    path = tmp_path / "sources.py"
    path.write_text(source)
    assert imported("sendit.data.sources", path, module_files()) == expected


def test_a_cycle_is_found_and_shown():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({**graph, "c": {"d"}}) is None
