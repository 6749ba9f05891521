"""didray.core stays pure: only torch and the standard-library math/typing helpers, no I/O.

Checked statically with ``ast`` so it is fast and cannot be fooled by modules that other tests
happen to have imported already.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support.imports import call_name, imports

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "didray" / "core"
ALLOWED = {"torch", "math", "dataclasses", "typing", "__future__"}
FILES = sorted(CORE.rglob("*.py"))


def _is_allowed(module: str) -> bool:
    return (
        module.split(".")[0] in ALLOWED
        or module == "didray.core"
        or module.startswith("didray.core.")
    )


def forbidden_imports(source: str, path: Path) -> list[str]:
    """The modules outside what core may use that `source`, at `path` under ROOT, imports."""
    return sorted(m for m in imports(source, path) if not _is_allowed(m))


def test_core_files_found() -> None:
    assert {f.name for f in FILES} >= {"logprobs.py", "dpo.py", "did.py", "estimators.py"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_only_allowed_imports(path: Path) -> None:
    bad = forbidden_imports(path.read_text(), path.relative_to(ROOT))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from ..sweep import driver\n", ["didray.sweep", "didray.sweep.driver"]),
        ("from . import did\nfrom .. import files\n", ["didray", "didray.files"]),
        ("def f():\n    import importlib\n    return importlib.import_module('polars')\n",
         ["importlib", "polars"]),
        ("from importlib import import_module\nimport_module('..sweep.driver', __package__)\n",
         ["didray.sweep.driver", "importlib", "importlib.import_module"]),
        ("numpy = __import__('numpy')\n", ["numpy"]),
        ("from .estimators import bootstrap\nimport torch.nn\n", []),
    ],
)
def test_checker_sees_relative_and_string_imports(source: str, found: list[str]) -> None:
    """Each import a core file could hide behind: a relative step up, a string import."""
    assert forbidden_imports(source, Path("didray/core/dpo.py")) == found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_io_calls(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        assert name not in {"open", "load", "save"}, f"{path.name}:{node.lineno} calls {name}("
