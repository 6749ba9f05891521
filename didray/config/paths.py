"""Dotted paths into sweep data, one engine for command-line overrides, search axes and error
locations: `regimes[1].tau` and `regimes.1.tau` are ('regimes', 1, 'tau')."""

from __future__ import annotations

import re

from pydantic import BaseModel

KeyPath = tuple[str | int, ...]
SEGMENT = re.compile(r"([^.\[\]]+)((?:\[[0-9]+\])*)")  # a name, then any [i] list items


class PathError(ValueError):
    """A key that is no path, or a path the data cannot hold."""


def parse(key: str) -> KeyPath:
    """The parts of a dotted key; a part of digits is a list index."""
    parts: list[str | int] = []
    for segment in key.split("."):
        match = SEGMENT.fullmatch(segment)
        if match is None:
            raise PathError(f"`{key}` is not a path like train.lr or regimes[1].tau")
        name, items = match.groups()
        parts.append(int(name) if re.fullmatch("[0-9]+", name) else name)
        parts += [int(i) for i in re.findall("[0-9]+", items)]
    return tuple(parts)


def dotted(path: KeyPath) -> str:
    """('regimes', 1, 'tau') -> 'regimes[1].tau', as error messages write a path."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).removeprefix(".")


def get(node: object, path: KeyPath) -> object:
    """The value at `path` in plain data (dicts, lists) or pydantic models."""
    for part in path:
        node = getattr(node, part) if isinstance(node, BaseModel) else node[part]
    return node


def put(node: object, path: KeyPath, value: object) -> object:
    """A copy of `node` with `value` at `path`; `node` itself is left as it is. Missing mapping
    keys are created (an override may set a section the file leaves out); a list item must
    exist. Models are copied with `model_copy`: `value` must already be of the field's type."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, BaseModel):
        return node.model_copy(update={head: put(getattr(node, head), rest, value)})
    if isinstance(node, dict):
        return {**node, head: put(node.get(head, {}), rest, value)}
    if not isinstance(node, list):
        raise PathError(f"`{head}` is set inside {node!r}, which is a value, not a section")
    if not isinstance(head, int):
        raise PathError(f"`{head}` is set inside a list: give an item's index")
    if head >= len(node):
        raise PathError(f"list index out of range (item {head} of a list of {len(node)})")
    return [*node[:head], put(node[head], rest, value), *node[head + 1:]]
