"""The shape of the code: modules of one job, and no import cycle between packages.

ARCHITECTURE.md promises data flowing one way; these checks keep a later change from
quietly turning two packages into one tangle or growing a module past what one job needs.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pixelbatch"
MAX_MODULE_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def _unit(path: Path) -> str:
    """The top-level package or module a file belongs to (``db``, ``intake``...)."""
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    units: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "pixelbatch" and len(parts) > 1:
                units.add(parts[1])
    return units


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in _modules():
        unit = _unit(path)
        graph[unit] |= _imported_units(path) - {unit}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_packages() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_imports_no_face() -> None:
    """The API and the CLI are faces over the services; nothing below them imports them."""
    graph = _graph()
    for unit, imports in graph.items():
        if unit not in ("api", "cli", "__main__"):
            assert not imports & {"api", "cli"}, f"{unit} imports {imports & {'api', 'cli'}}"


def test_transform_is_pure() -> None:
    """Bytes in, bytes out: no database, network, storage or settings."""
    assert _graph()["transform"] <= {"errors"}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_is_small_and_says_its_job(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, "split it at its seams"
    if text.strip():
        assert text.startswith('"""'), "the first line says the module's one job"
