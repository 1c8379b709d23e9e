"""Engine code runs on GUI job threads: it must not change process-wide state behind other threads."""

from __future__ import annotations

import ast
from pathlib import Path

import workbench.engine

ENGINE = Path(workbench.engine.__file__).resolve().parent


def _gc_collect_calls() -> list[str]:
    found = []
    for path in sorted(ENGINE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "collect"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "gc"):
                found.append(f"{path.relative_to(ENGINE)}:{node.lineno}")
    return found


def test_no_gc_collect_in_engine_code() -> None:
    """A collection on a job thread can free GUI-thread Qt objects there (deadlock seen with PySide6)."""
    assert _gc_collect_calls() == []
