"""The scaling package imports cleanly from any entry point, with no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import polyformer.scaling

ROOT = Path(polyformer.scaling.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("polyformer", "scaling") + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """Scaling modules named by any import statement in ``path``, also those inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> scaling modules it imports (a package's own ``__init__`` excluded: not a cycle)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(paths)
    return {m: {t for t in _imports(p, known) if t != m and not m.startswith(t + ".")} for m, p in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None; depth-first search."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_checker_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from polyformer.scaling.fit import fit_law\n")
    assert _imports(module, {"polyformer.scaling.fit"}) == {"polyformer.scaling.fit"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_scaling_modules_have_no_import_cycle() -> None:
    graph = import_graph()
    assert "polyformer.scaling.fit" in graph and "polyformer.scaling.bootstrap" in graph
    assert find_cycle(graph) is None


@pytest.mark.parametrize("module", ["polyformer.scaling.bootstrap", "polyformer.scaling.fit"])
def test_scaling_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
