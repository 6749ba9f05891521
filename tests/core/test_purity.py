"""didray.core stays pure: only torch and the standard-library math/typing helpers, no I/O.

Checked statically with ``ast`` so it is fast and cannot be fooled by modules that other tests
happen to have imported already.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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


# ------------------------------------------------------------------ one-way layers

PACKAGE = CORE.parent
# A module may import its own package and packages of a lower rank, never the same rank or
# above (docs/design.md §4): the bottom holds what every layer shares.
RANKS = {
    "__init__": 0, "errors": 0, "metrics": 0, "display": 0, "core": 0,
    "files": 1,
    "storage": 2,
    "config": 3,
    "worlds": 4,
    "sampling": 5, "theory": 5,
    "data": 6, "eval": 6,
    "train": 7,
    "sweep": 8, "analysis": 8,
    "jobs": 9,
    "jobs_cli": 10,
    "cli": 11, "__main__": 12,
}


def _unit(path: Path) -> str:
    """The layer unit of a didray source file: its subpackage, or its module at the top."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _didray_imports(path: Path) -> set[str]:
    units = set()
    for name in _imported_modules(ast.parse(path.read_text(), filename=str(path))):
        parts = name.split(".")
        if parts[0] == "didray" and len(parts) > 1:
            units.add(parts[1])
    return units


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        unit = _unit(path)
        graph.setdefault(unit, set()).update(_didray_imports(path) - {unit})
    return graph


def test_every_unit_has_a_rank() -> None:
    assert set(import_graph()) <= set(RANKS), set(import_graph()) - set(RANKS)


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{unit} -> {target}" for unit, targets in graph.items()
                  for target in targets if RANKS[target] >= RANKS[unit])


def cycles(graph: dict[str, set[str]]) -> list[str]:
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(t == goal or (t not in seen and reaches(t, goal, seen | {t}))
                   for t in graph.get(start, ()))

    return sorted(unit for unit in graph if reaches(unit, unit, {unit}))


def test_imports_only_point_down() -> None:
    assert upward(import_graph()) == []


def test_no_package_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_catch_what_main_had(tmp_path: Path) -> None:
    """The import edges main had before the layers were made one-way."""
    module = tmp_path / "worker.py"
    module.write_text("from didray.train.gauges import GAUGES\n"
                      "from didray.sweep.metrics import export_step_metrics\n")
    assert _didray_imports(module) == {"train", "sweep"}
    old = {"sweep": {"data", "train"}, "data": {"sweep", "train"}, "train": {"data", "sweep"},
           "eval": {"sweep"}}
    assert upward(old) == ["data -> sweep", "data -> train", "eval -> sweep", "train -> sweep"]
    assert cycles(old) == ["data", "sweep", "train"]  # eval only points into the cycle


def test_train_worker_imports_no_data_or_sampling_stack() -> None:
    """A Train worker process imports the worker module; it must not pay for `datasets`,
    the scorers or the sampler pool (each DDP rank would load them)."""
    code = ("import sys, didray.train.worker\n"
            "heavy = ['datasets', 'didray.eval.scorers', 'didray.sampling.pool', 'polars',"
            " 'didray.sweep.prepare']\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
