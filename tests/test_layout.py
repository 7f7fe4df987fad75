"""The package's imports flow one way (docs/architecture.md). Every import counts: at module level,
inside functions, and under TYPE_CHECKING, since each one ties the two modules' designs together."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tricorn"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the package → the modules of the package it imports."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from . import h1` imports the module h1; `from . import __version__`, the package
                submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules]
                candidates = submodules if len(submodules) == len(node.names) else [*submodules, target]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            found.update(c for c in candidates if c in modules and c != name)
        graph[name] = found
    return graph


GRAPH = _imports()


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_graph_is_read() -> None:
    assert "tricorn.server.h1" in GRAPH["tricorn.server.connection"]
    assert "tricorn.server.state" in GRAPH["tricorn.server.connection"]
    assert "tricorn.serve" in GRAPH["tricorn.cli"]
    assert len(GRAPH) > 40


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    circles = sorted({" -> ".join(sorted({a, b})) for a in GRAPH for b in _reachable(a)
                      if b != a and a in _reachable(b)})
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("tricorn.master", ("tricorn.server", "tricorn.cli", "tricorn.serve", "tricorn.bench", "tricorn.tune")),
    ("tricorn.host", ("tricorn.server", "tricorn.master", "tricorn.cli", "tricorn.serve", "tricorn.bench",
                      "tricorn.tune")),
    ("tricorn.server", ("tricorn.master", "tricorn.cli", "tricorn.serve", "tricorn.bench", "tricorn.tune")),
    ("tricorn.bench", ("tricorn.server", "tricorn.master", "tricorn.cli", "tricorn.serve", "tricorn.tune")),
])
def test_each_layer_reaches_only_the_layers_below_it(layer: str, forbidden: tuple[str, ...]) -> None:
    """The master never loads the request path, nor the load generator the server, and so on."""
    wrong = {f"{module} -> {target}" for module in GRAPH if _within(module, (layer,))
             for target in _reachable(module) if _within(target, forbidden)}
    assert not wrong, "\n".join(sorted(wrong))


def test_a_circle_would_be_seen() -> None:
    """The check itself can fail: two modules that import each other inside functions."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {**saved, "tricorn.server.h1": saved["tricorn.server.h1"] | {"tricorn.server.connection"}}
        with pytest.raises(AssertionError, match=re.escape("tricorn.server.connection -> tricorn.server.h1")):
            test_no_module_imports_a_module_that_imports_it_back()
    finally:
        GRAPH = saved
