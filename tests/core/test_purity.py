"""didray.core stays pure: only torch and the standard-library math/typing helpers, no I/O.

Checked statically with ``ast`` so it is fast and cannot be fooled by modules that other tests
happen to have imported already.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "didray" / "core"
ALLOWED = {"torch", "math", "dataclasses", "typing", "__future__"}
FILES = sorted(CORE.rglob("*.py"))


def _imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # Relative imports stay inside didray.core by construction.
            names.append("didray.core" if node.level else (node.module or ""))
    return names


def _is_allowed(module: str) -> bool:
    return (
        module.split(".")[0] in ALLOWED
        or module == "didray.core"
        or module.startswith("didray.core.")
    )


def test_core_files_found() -> None:
    assert {f.name for f in FILES} >= {"logprobs.py", "dpo.py", "did.py", "estimators.py"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_only_allowed_imports(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [m for m in _imported_modules(tree) if not _is_allowed(m)]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_io_calls(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        assert name not in {"open", "load", "save"}, f"{path.name}:{node.lineno} calls {name}("
