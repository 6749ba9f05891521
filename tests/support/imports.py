"""The modules a source file imports, read statically with `ast` (the purity and layering tests).

Read from the text, so the answer cannot depend on what other tests happened to import, and
every import that can run counts wherever it sits, a function body included: a lazy import is
still an edge (one under `if TYPE_CHECKING:` is not).
"""

from __future__ import annotations

import ast
from pathlib import Path

STRING_IMPORTS = {"import_module", "__import__"}  # importlib.import_module("x"), __import__("x")


def module_name(path: Path) -> str:
    """The dotted name of a file at `path`, relative to the folder that holds its top package:
    didray/core/did.py -> didray.core.did, didray/core/__init__.py -> didray.core."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, path: Path) -> set[str]:
    """Every module name that `source`, the text of the file at `path` (relative as for
    `module_name`), may load: `x` of `import x`; `x` and `x.y` of `from x import y`, since y may
    be a submodule; relative names made absolute against the file's own package; and the
    string literal of a call to `import_module` or `__import__`."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (literal := _string_import(node)) is not None:
            dots = len(literal) - len(literal.lstrip("."))
            names.add(_absolute(literal[dots:], dots, package))
    return names


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` but those under `if TYPE_CHECKING:`: an import made only for type
    checkers never runs, so it is no edge (a module may name its importer's types that way)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def _absolute(module: str, level: int, package: str) -> str:
    """`module` imported with `level` leading dots from inside `package`."""
    if not level:
        return module
    parts = package.split(".")
    base = parts[:len(parts) - level + 1]
    return ".".join([*base, module] if module else base)


def _string_import(node: ast.AST) -> str | None:
    """The module a call like `importlib.import_module("x")` names, if it is a literal (a name
    built at run time cannot be read statically). A relative literal is taken against the
    file's package, the `package=__package__` such calls pass."""
    if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)):
        return None
    return node.args[0].value if call_name(node) in STRING_IMPORTS else None


def call_name(call: ast.Call) -> str:
    """What a call calls: `f` of `f(...)` and of `x.f(...)`, "" for anything else."""
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
