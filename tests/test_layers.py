"""didray's layers are one-way and no module imports itself back (docs/design.md §4).

Read statically (support.imports), so a lazy import inside a function counts as an edge.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.imports import imports, module_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "didray"
# A module may import its own package and packages of a lower rank, never the same rank or
# above (docs/design.md §4): the bottom holds what every layer shares.
RANKS = {
    "__init__": 0, "errors": 0, "metrics": 0, "display": 0, "core": 0, "threads": 0,
    "files": 1,
    "storage": 2,
    "config": 3,
    "worlds": 4, "examples": 4, "preflight": 4,
    "sampling": 5, "theory": 5,
    "data": 6, "eval": 6,
    "train": 7,
    "sweep": 8, "analysis": 8,
    "jobs": 9,
    "jobs_cli": 10,
    "cli": 11, "__main__": 12,
}
SOURCES = {path.relative_to(ROOT): path.read_text() for path in PACKAGE.rglob("*.py")}


def unit_graph(sources: dict[Path, str]) -> dict[str, set[str]]:
    """Layer unit -> the units it imports. A unit is a subpackage of didray, or a module at
    its top; `sources` maps a file's path (relative to the repository) to its text."""
    graph: dict[str, set[str]] = {}
    for path, source in sources.items():
        unit = path.relative_to("didray").with_suffix("").parts[0]
        targets = {name.split(".")[1] for name in imports(source, path)
                   if name.startswith("didray.")}
        graph.setdefault(unit, set()).update(targets - {unit})
    return graph


def module_graph(sources: dict[Path, str]) -> dict[str, set[str]]:
    """Module -> the didray modules it imports: each imported name taken to the longest of its
    prefixes that is a module (`from m import f` names m.f, a function of m)."""
    modules = {module_name(path) for path in sources}
    graph = {}
    for path, source in sources.items():
        name = module_name(path)
        graph[name] = {_longest_module(imported, modules)
                       for imported in imports(source, path)} - {None, name}
    return graph


def _longest_module(name: str, modules: set[str]) -> str | None:
    parts = name.split(".")
    return next((prefix for k in range(len(parts), 0, -1)
                 if (prefix := ".".join(parts[:k])) in modules), None)


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{unit} -> {target}" for unit, targets in graph.items()
                  for target in targets if RANKS[target] >= RANKS[unit])


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """The nodes that reach themselves."""
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(t == goal or (t not in seen and reaches(t, goal, seen | {t}))
                   for t in graph.get(start, ()))

    return sorted(node for node in graph if reaches(node, node, {node}))


def test_every_unit_has_a_rank() -> None:
    assert set(unit_graph(SOURCES)) <= set(RANKS), set(unit_graph(SOURCES)) - set(RANKS)


def test_imports_only_point_down() -> None:
    assert upward(unit_graph(SOURCES)) == []


def test_no_package_cycle() -> None:
    assert cycles(unit_graph(SOURCES)) == []


def test_no_module_cycle() -> None:
    assert cycles(module_graph(SOURCES)) == []


def test_the_checks_catch_what_main_had() -> None:
    """The import edges main had before the layers were made one-way."""
    worker = {Path("didray/train/worker.py"): "from didray.train.gauges import GAUGES\n"
                                              "from didray.sweep.metrics import export\n"}
    assert unit_graph(worker) == {"train": {"sweep"}}
    old = {"sweep": {"data", "train"}, "data": {"sweep", "train"}, "train": {"data", "sweep"},
           "eval": {"sweep"}}
    assert upward(old) == ["data -> sweep", "data -> train", "eval -> sweep", "train -> sweep"]
    assert cycles(old) == ["data", "sweep", "train"]  # eval only points into the cycle


def test_the_checks_catch_relative_and_string_imports() -> None:
    sources = {Path("didray/data/regimes.py"): "from ..sweep import driver\n",
               Path("didray/eval/toy.py"): "import importlib\n"
                                           "importlib.import_module('didray.analysis')\n"}
    assert upward(unit_graph(sources)) == ["data -> sweep", "eval -> analysis"]


def test_module_cycle_through_a_lazy_import() -> None:
    """What sampling had: the sampler imports a backend inside a function, the backend imports
    the sampler's helpers back at its top; the pool only points into the cycle."""
    sampling = Path("didray/sampling")
    sources = {
        sampling / "sampler.py": "def build():\n    from .vllm_backend import VllmBackend\n",
        sampling / "vllm_backend.py": "from didray.sampling.sampler import completion\n",
        sampling / "pool.py": "from didray.sampling import sampler\n",
        sampling / "__init__.py": "",
    }
    graph = module_graph(sources)
    assert graph["didray.sampling.pool"] == {"didray.sampling", "didray.sampling.sampler"}
    assert cycles(graph) == ["didray.sampling.sampler", "didray.sampling.vllm_backend"]
    assert cycles(unit_graph(sources)) == []  # one package: the unit graph cannot see it


def test_an_import_for_type_checkers_only_is_no_edge() -> None:
    """config's rules name the schema's types for type checkers while the schema calls the
    rules: no import runs in a circle. Outside `if TYPE_CHECKING:` the same line is one."""
    config = Path("didray/config")
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .schema import Sweep\n"
    sources = {config / "checks.py": typed, config / "schema.py": "from . import checks\n",
               config / "__init__.py": ""}
    assert cycles(module_graph(sources)) == []
    sources[config / "checks.py"] = "from .schema import Sweep\n"
    assert cycles(module_graph(sources)) == ["didray.config.checks", "didray.config.schema"]


def test_train_worker_imports_no_data_or_sampling_stack() -> None:
    """A Train worker process imports the worker module; it must not pay for `datasets`,
    the scorers or the sampler pool (each DDP rank would load them)."""
    code = ("import sys, didray.train.worker\n"
            "heavy = ['datasets', 'didray.eval.scorers', 'didray.sampling.pool', 'polars',"
            " 'didray.sweep.prepare']\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
