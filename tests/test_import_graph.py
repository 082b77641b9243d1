"""The packages' import graph has no loop (docs/architecture.md: arrows point one way),
and no module is longer than a reader can hold in mind.

Every import counts, also one inside a function or under TYPE_CHECKING: each hides a
loop rather than removing it.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("legacy_parser", "token_fetcher")
MAX_MODULE_LINES = 400
# Generated code, and the in-pod runner: a single file by design, copied alone into a
# legacy container (its docstring says why).
LONGER_ALLOWED = ("token_fetcher._proto.", "token_fetcher.inpod.runner")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports: a ``from X import y`` names X.y when that is
    a module, else X."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_the_walk_sees_the_imports() -> None:
    graph = _graph()
    assert "token_fetcher.catalog" in graph["token_fetcher.service"]
    assert "token_fetcher.migration" in graph["token_fetcher.airflow.layouts"]


def test_no_import_loop() -> None:
    try:
        graphlib.TopologicalSorter(_graph()).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import loop: {' -> '.join(error.args[1])}")


def test_no_module_is_over_the_size_limit() -> None:
    lengths = {name: len(path.read_text(encoding="utf-8").splitlines())
               for name, path in _modules().items() if not name.startswith(LONGER_ALLOWED)}
    assert lengths["token_fetcher.catalog"] > 0  # the walk sees the modules
    too_long = {name: lines for name, lines in lengths.items() if lines > MAX_MODULE_LINES}
    assert not too_long, f"split by concern (at most {MAX_MODULE_LINES} lines): {too_long}"
