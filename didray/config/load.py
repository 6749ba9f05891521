"""Read a sweep file (safe YAML) and turn validation errors into field-path messages."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from didray.config.schema import Sweep
from didray.errors import BadInput


class SweepFileError(BadInput):
    """A sweep file that cannot be used; `errors` holds one `path: reason` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source, self.errors = source, errors
        super().__init__(f"{source}: " + "; ".join(errors))

    def report(self) -> str:
        lines = "\n".join(f"  {e}" for e in self.errors)
        return f"{self.source}: {len(self.errors)} error(s)\n{lines}"


def field_path(loc: tuple) -> str:
    """('search', 'beta', 2) -> 'search.beta[2]'; discriminator tags are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("offpolicy", "pg", "powerlaw") and out.endswith("]"):
            continue  # pydantic adds the union member's tag to the path; it says nothing new
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def reason(error: dict) -> str:
    """Pydantic's message, phrased as a rule where it has a plain one."""
    ctx = error.get("ctx") or {}
    rules = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "extra_forbidden": "unknown field (not in the schema)",
        "missing": "required field is missing",
        "too_short": "must have at least {min_length} item(s)",
        "string_pattern_mismatch": "must match {pattern}",
    }
    rule = rules.get(error["type"])
    text = rule.format(**ctx) if rule else error["msg"].removeprefix("Value error, ")
    return f"{text} (got {error['input']!r})" if error["type"] in ("greater_than",
                                                                    "greater_than_equal") else text


def parse_sweep(data: object, source: str = "<sweep>") -> Sweep:
    try:
        return Sweep.model_validate(data)
    except ValidationError as err:
        lines = [f"{field_path(e['loc'])}: {reason(e)}" for e in err.errors()]
        raise SweepFileError(source, lines) from None


def load_sweep(path: str | Path) -> Sweep:
    """Load and validate; every failure is a SweepFileError naming the file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SweepFileError(str(path), [f"cannot read: {err.strerror}"]) from None
    except yaml.YAMLError as err:
        raise SweepFileError(str(path), [f"not valid YAML: {err}".replace("\n", " ")]) from None
    if not isinstance(data, dict):
        raise SweepFileError(str(path), ["top level must be a mapping of sections"])
    return parse_sweep(data, str(path))
