"""The two test tiers: `make test` runs what is not `slow` (plus the session's one CI sweep,
which the contract tests read); `make test-all` runs everything.

A test is `slow` when it starts Ray or a sweep. tests/conftest.py marks such tests at
collection by reading their code (`starts_ray`): the test function and every fixture it uses
(the session's CI sweep excepted), following calls into functions of the same module. At run
time `require_slow` backs that up: the sweep helpers and `ray.init` refuse to run inside a test
the reading missed, so a heavy test cannot stay in the fast tier unnoticed.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from types import ModuleType

import pytest

# Calls that start Ray or a sweep, by the called name (a function or a method).
HEAVY_NAMES = {"run_here", "run_cli", "Cluster", "start_ray", "run_sweep"}
# The session's CI sweep: the fast tier runs it once for the contract tests that read it.
SHARED_FIXTURES = {"ci_sweep", "warm_cache"}

_state: dict = {"item": None, "shared": False}


def _is_heavy_call(node: ast.Call, heavy: set[str]) -> bool:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    if name in heavy or name in HEAVY_NAMES:
        return True
    if isinstance(func, ast.Attribute) and name == "init" and \
            isinstance(func.value, ast.Name) and func.value.id == "ray":
        return True
    # didray's own entry point: main(["run", ...])
    first = node.args[0] if node.args else None
    return (name == "main" and isinstance(first, ast.List) and bool(first.elts)
            and isinstance(first.elts[0], ast.Constant) and first.elts[0].value == "run")


def _starts_ray_process(node: ast.AST) -> bool:
    """A literal command line `ray start --head ...` (a test's own Ray head node)."""
    if not isinstance(node, ast.List | ast.Tuple):
        return False
    words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
    return any(a == "start" and b == "--head" for a, b in zip(words, words[1:], strict=False))


def _heavy_body(tree: ast.AST, heavy: set[str]) -> bool:
    return any((isinstance(n, ast.Call) and _is_heavy_call(n, heavy)) or _starts_ray_process(n)
               for n in ast.walk(tree))


def heavy_functions(source: str) -> set[str]:
    """Names of the functions in a module's `source` that start Ray or a sweep, directly or by
    calling another such function of the module."""
    tree = ast.parse(source)
    functions = {n.name: n for n in ast.walk(tree)
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    heavy: set[str] = set()
    while True:
        more = {name for name, node in functions.items()
                if name not in heavy and _heavy_body(node, heavy)}
        if not more:
            return heavy
        heavy |= more


@cache
def _module_heavy(module: ModuleType) -> frozenset[str]:
    try:
        return frozenset(heavy_functions(inspect.getsource(module)))
    except (OSError, TypeError):  # no source (a builtin or compiled fixture)
        return frozenset()


def starts_ray(function) -> bool:
    """Whether `function` (a test or a fixture) starts Ray or a sweep."""
    module = inspect.getmodule(function)
    if module is None:
        return False
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError):
        return False
    return _heavy_body(tree, set(_module_heavy(module)))


def is_heavy(item: pytest.Item) -> bool:
    """A collected test that starts Ray or a sweep, itself or through a fixture."""
    if starts_ray(getattr(item, "function", None)):
        return True
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs if info else {}
    return any(starts_ray(defs[-1].func) for name, defs in definitions.items()
               if name not in SHARED_FIXTURES)


def enter(item: pytest.Item | None) -> None:
    _state["item"] = item


@contextmanager
def shared_sweep() -> Iterator[None]:
    """The session's CI sweep runs inside whichever test first asks for it."""
    _state["shared"] = True
    try:
        yield
    finally:
        _state["shared"] = False


def require_slow(what: str) -> None:
    item = _state["item"]
    if item is None or _state["shared"] or item.get_closest_marker("slow"):
        return
    pytest.fail(f"{item.nodeid} {what} but is not marked slow: the conftest's reading of its "
                "code missed it. Mark it `@pytest.mark.slow`, or call the sweep through "
                "support.sweeps (run_here, run_cli) so the reading sees it", pytrace=False)
