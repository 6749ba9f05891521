"""The building blocks of the sweep file's schema: number types that refuse booleans and
infinities, bounded counts, and models that refuse unknown keys."""

from __future__ import annotations

import difflib
import types
from collections import Counter
from typing import Annotated, Any, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le
from pydantic import AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # used in paths and trial names
SEED_MAX = 2**31 - 1  # numpy's and Ray's seeds are 32-bit
MAX_TRIALS = 10_000
# beta, tau and the sampling temperature divide log-ratios and scores: at 1e-300 or 1e308 they
# are typos that train on inf and nan, not settings (docs/design.md §3.3).
SCALE_MIN, SCALE_MAX = 1e-4, 10_000


def refuse_bool(value: object) -> object:
    """YAML reads true/yes/on as booleans, which pydantic would take as 1: never a number meant."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not the boolean {value}")
    return value


def repeated(values: list) -> list:
    return sorted(v for v, n in Counter(values).items() if n > 1)


def distinct(values: list) -> list:
    """Equal values on a search axis make identical trials that would count as replicates."""
    if same := repeated(values):
        raise ValueError(f"values must be distinct; repeated: {', '.join(map(str, same))} "
                         "(identical trials would be counted as replicates)")
    return values


def nearest(name: str, choices: list[str]) -> str:
    """"; did you mean `x`?" for the choice closest to a mistyped name, else ""."""
    near = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean `{near[0]}`?" if near else ""


def models_in(annotation: object) -> list[type[BaseModel]]:
    """The models a field's annotation holds: through Annotated, `X | None`, unions, lists."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    if origin in (Annotated, Union, types.UnionType, list):
        args = get_args(annotation)[:1] if origin is Annotated else get_args(annotation)
        return [m for arg in args for m in models_in(arg)]
    return []


# The bool check wraps the bounds (here and in fields) so that they stay in the JSON schema.
Int = Annotated[int, BeforeValidator(refuse_bool)]
IntOrNone = Annotated[int | None, BeforeValidator(refuse_bool)]
Float = Annotated[float, AllowInfNan(False), BeforeValidator(refuse_bool)]
Positive = Annotated[float, AllowInfNan(False), Gt(0), BeforeValidator(refuse_bool)]
Seed = Annotated[int, Ge(0), Le(SEED_MAX), BeforeValidator(refuse_bool)]
Scale = Annotated[float, AllowInfNan(False), Ge(SCALE_MIN), Le(SCALE_MAX),
                  BeforeValidator(refuse_bool)]
SCALE_RANGE = f"{SCALE_MIN:g} to {SCALE_MAX:,}"  # for the descriptions of Scale fields


def count(default: int | None, limit: int, description: str) -> Any:
    """A field of 1..limit, its limit stated in its description."""
    return Field(default, ge=1, le=limit, description=f"{description} (1 to {limit:,})")


def amount(default: float, limit: int, description: str, *, zero: bool = False) -> Any:
    """A resource amount: > 0 (>= 0 when `zero`) and at most `limit`, stated in its description."""
    low, bounds = ("0", {"ge": 0}) if zero else ("> 0", {"gt": 0})
    return Field(default, le=limit, description=f"{description} ({low}, at most {limit:,})",
                 **bounds)


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a sweep file must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
