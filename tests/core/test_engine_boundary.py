"""Only the GUI imports Qt: core, techniques (but their panel.py), analysis and the recipe run headless.

The import-linter contracts in pyproject.toml enforce the layering; this test backs them with a
direct check (static imports) and a dynamic one (importing every headless module loads no Qt).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

WORKBENCH = Path(__file__).resolve().parents[2] / "workbench"
HEADLESS = [WORKBENCH / d for d in ("core", "techniques", "analysis", "recipe")]
QT = ("PySide6", "pyqtgraph", "shiboken6", "PyQt5", "PyQt6")


def _headless_files() -> list[Path]:
    return [p for d in HEADLESS if d.exists() for p in sorted(d.rglob("*.py")) if p.name != "panel.py"]


def test_no_headless_module_imports_qt_statically() -> None:
    offenders = []
    for path in _headless_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(WORKBENCH)}: {n}" for n in names if n.split(".")[0] in QT]
    assert not offenders, offenders


def test_importing_every_headless_module_loads_no_qt() -> None:
    modules = [".".join(p.relative_to(WORKBENCH.parent).with_suffix("").parts).removesuffix(".__init__")
               for p in _headless_files()]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {QT!r}]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=180)


def test_no_module_imports_another_modules_private_names() -> None:
    """``from workbench.x import _name`` couples one module to another's internals: make it public or keep it local."""
    offenders = []
    for path in sorted(WORKBENCH.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("workbench")):
                offenders += [f"{path.relative_to(WORKBENCH)}:{node.lineno} {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders
