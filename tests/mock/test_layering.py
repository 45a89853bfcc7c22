"""The mock's modules import only downward (issue 9, part 5).

As in drivers/iommu/iommufd/, the shared types (context, ucmd, object lookups) sit in
backends.mock.private below every concept module, and main.py's dispatch table on top.
Checked on the source with ast, so it holds without importing anything:

- the graph of run-time imports between backends/mock modules, function-level imports
  included (they cannot hide a cycle), has no cycle;
- no module imports main.py, even for type checking, except backend.py (which opens
  /dev/iommu through it);
- no backends.mock import sits inside a function.

Imports under ``if TYPE_CHECKING:`` are annotations only and may name a peer's types.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MOCK = Path(__file__).resolve().parents[2] / "backends" / "mock"
PACKAGE = "backends.mock"
TOP = {"backend", "__init__"}
"""Modules allowed to import main.py."""


class Imports:
    """The backends.mock modules one source file imports, by kind."""

    def __init__(self) -> None:
        self.runtime: set[str] = set()
        self.typing: set[str] = set()
        self.in_function: set[str] = set()


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[2] for a in node.names
                if a.name.startswith(PACKAGE + ".") and a.name.split(".")[2] in modules}
    if node.module == PACKAGE:
        return {a.name for a in node.names if a.name in modules}
    if node.module and node.module.startswith(PACKAGE + "."):
        name = node.module.split(".")[2]
        return {name} if name in modules else set()
    return set()


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def parse_imports(sources: dict[str, str]) -> dict[str, Imports]:
    """Module name -> its imports of the other modules in ``sources``."""
    modules = set(sources)
    found: dict[str, Imports] = {}
    for name, text in sources.items():
        imports = Imports()

        def visit(node: ast.AST, in_function: bool, typing_only: bool,
                  imports: Imports = imports) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    visit(child, in_function, True)
                elif isinstance(child, ast.Import | ast.ImportFrom):
                    targets = _targets(child, modules)
                    if typing_only:
                        imports.typing |= targets
                    else:
                        imports.runtime |= targets
                        if in_function:
                            imports.in_function |= targets
                else:
                    visit(child, in_function or isinstance(
                        child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda),
                        typing_only)

        visit(ast.parse(text), False, False)
        found[name] = imports
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                cycle = walk(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = walk(node)
            if cycle:
                return cycle
    return None


def layering_problems(sources: dict[str, str]) -> list[str]:
    """Every breach of the rules in the module docstring, one line each."""
    imports = parse_imports(sources)
    problems = [f"{name} imports main.py" for name, found in sorted(imports.items())
                if name not in TOP and "main" in found.runtime | found.typing]
    problems += [f"{name} imports {', '.join(sorted(found.in_function))} inside a function"
                 for name, found in sorted(imports.items()) if found.in_function]
    cycle = find_cycle({name: found.runtime for name, found in imports.items()})
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


def _mock_sources() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(MOCK.glob("*.py"))}


def test_mock_modules_import_only_downward() -> None:
    sources = _mock_sources()
    assert {"main", "private", "ioas", "hw_pagetable", "device", "viommu"} <= set(sources)
    assert layering_problems(sources) == []


def test_private_is_below_every_concept_module() -> None:
    """The concept modules reach the context through private.py (none through main)."""
    imports = parse_imports(_mock_sources())
    for name in ("ioas", "hw_pagetable", "viommu", "eventq", "device", "selftest"):
        assert "private" in imports[name].runtime | imports[name].typing, name
    assert not {"ioas", "hw_pagetable", "device", "viommu", "eventq", "main"} \
        & imports["private"].runtime


@pytest.mark.parametrize(("sources", "expected"), [
    ({"a": "from backends.mock import b\n", "b": "from backends.mock.a import x\n"},
     ["import cycle: a -> b -> a"]),
    ({"a": "def f():\n    from backends.mock.b import y\n",
      "b": "import backends.mock.a\n"},
     ["a imports b inside a function", "import cycle: a -> b -> a"]),
    ({"ioas": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
              "    from backends.mock.main import IommufdCtx\n",
      "main": "from backends.mock import ioas\n"},
     ["ioas imports main.py"]),
    ({"a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
           "    from backends.mock.b import B\n",
      "b": "from backends.mock.a import A\n", "backend": "from backends.mock import main\n",
      "main": "from backends.mock import a\n"},
     []),
])
def test_the_check_sees_each_breach(sources: dict[str, str], expected: list[str]) -> None:
    """The checker itself: cycles (also through a function-level import) and imports of
    main are reported; a type-only import of a peer and backend.py's import of main are
    not."""
    assert layering_problems(sources) == expected
