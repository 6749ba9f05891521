"""The search axes of a sweep file: beta, regime and seed, and any setting of the sections a
search names (schema.SweepSearch: train.* and eval.*) under its dotted path, as a list of
values or, in random mode, a distribution. Each value is typed by its setting's own field
once, here; the rules across fields are checked on the search points (didray.config.checks).
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

from didray.config.fields import (
    MAX_TRIALS,
    SCALE_RANGE,
    Float,
    Int,
    IntOrNone,
    Positive,
    Scale,
    Seed,
    Strict,
    count,
    distinct,
    models_in,
    nearest,
)
from didray.config.paths import KeyPath, dotted, parse
from didray.metrics import BOTH, STEP

# A swept setting's value as YAML gives it; the setting's field types it (`Search._typed`).
Scalar = bool | int | float | str | None
AxisList = Annotated[list[Scalar], Field(min_length=1), AfterValidator(distinct)]
DISTRIBUTIONS = ("loguniform", "uniform", "choice")


class Distribution(Strict):
    """A random-mode axis: exactly one of loguniform: [lo, hi], uniform: [lo, hi] or
    choice: [values]."""

    loguniform: tuple[Positive, Positive] | None = Field(None, description="[lo, hi], 0 < lo")
    uniform: tuple[Float, Float] | None = Field(None, description="[lo, hi]")
    choice: AxisList | None = Field(None, description="distinct values, drawn uniformly")

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [k for k in DISTRIBUTIONS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform, uniform, choice")
        bounds = self.loguniform or self.uniform
        if bounds and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]}: [lo, hi] needs lo < hi (got {list(bounds)})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTIONS if getattr(self, k) is not None)

    @model_serializer
    def _as_given(self) -> dict:
        return {self.kind: self.values}

    @property
    def values(self) -> list:
        """What the sweep is checked with: the bounds, or every choice."""
        return list(getattr(self, self.kind))


AXIS_TAGS = ("list", "distribution")


def axis_kind(value: object) -> str | None:
    return "list" if isinstance(value, list) else "distribution" if isinstance(
        value, dict | Distribution) else None


# Tagged, so a bad axis gets the errors of its own kind only, not those of both.
Axis = Annotated[Annotated[AxisList, Tag("list")] | Annotated[Distribution, Tag("distribution")],
                 Discriminator(axis_kind, custom_error_type="axis",
                               custom_error_message="must be a list of values or a "
                               "distribution ({loguniform: [lo, hi]}, {uniform: [lo, hi]} or "
                               "{choice: [...]})")]
AXES = TypeAdapter(Axis)
# Read while preparing the regime datasets, reference caches and (hf) pi_ref's evaluation,
# once for every trial: a per-trial value would meet data prepared for another value.
PREPARED = ("data", "train.max_prompt_tokens", "train.max_response_tokens", "eval.did_samples",
            "eval.split", "eval.prompts", "eval.scorer", "eval.qa")


# The one prepared setting that is an axis: each value is its own dataset of every regime,
# built in prepare like the others (docs/design.md §3.7), so its values must be known before
# any trial starts: a list, or choice in random mode.
DATA_SEED = "data.seed"


# What ASHA may compare trials on: a number every report carries in either world (the exact
# toy metrics are only at the reports eval.every picks).
ASHA_METRICS = tuple(m.name for m in STEP if m.dtype == "float" and m.worlds == BOTH)


class ASHA(Strict):
    """Ray Tune's ASHA (asynchronous successive halving) on train steps: at each rung
    (grace_period x reduction_factor^k steps, up to max_t) a trial whose metric is not in the
    best 1/reduction_factor of those that reached the rung is stopped (status STOPPED)."""

    metric: str = Field(description=f"a step metric every report carries: "
                        f"{', '.join(ASHA_METRICS)}")
    mode: Literal["min", "max"] = Field(description="min (e.g. loss) or max (e.g. "
                                        "rewards/accuracies)")
    grace_period: Int = count(1, 100_000, "steps every trial runs before it can be stopped; "
                              "at most max_t")
    max_t: IntOrNone = count(
        None, 100_000, "the step of the last rung; at most the last report before "
        "train.steps, (train.steps - 1) // report_every x report_every, the default: a trial "
        "is never cut at its last step, which already paid for its final evaluation")
    reduction_factor: Float = Field(
        4.0, gt=1, le=100, description="1/reduction_factor of the trials at a rung go on, "
        "and rungs are this factor apart; > 1, at most 100")

    @model_validator(mode="after")
    def _known_metric(self) -> ASHA:
        if self.metric not in ASHA_METRICS:
            raise ValueError(f"scheduler metric `{self.metric}` is not one every report "
                             f"carries ({', '.join(ASHA_METRICS)})"
                             + nearest(self.metric, list(ASHA_METRICS)))
        return self


class Scheduler(Strict):
    """A Tune trial scheduler that stops unpromising trials early."""

    asha: ASHA = Field(description="asynchronous successive halving on train steps")


def settings_of(model: type[BaseModel], path: KeyPath) -> dict[KeyPath, FieldInfo]:
    """Every setting under `model` (at `path`), nested sections included, by its path."""
    found = {}
    for name, field in model.model_fields.items():
        inner = models_in(field.annotation)
        found |= settings_of(inner[0], (*path, name)) if len(inner) == 1 else \
            {(*path, name): field}
    return found


def relocated(err: ValidationError, loc: tuple) -> list[InitErrorDetails]:
    """`err`'s errors, placed under `loc`."""
    return [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                             loc=(*loc, *e["loc"]), input=e["input"]) for e in err.errors()]


class Search(Strict):
    """The swept axes. grid: every combination; random: num_samples draws. At most 10,000
    trials either way. Besides beta, regime and seed, any train.* or eval.* setting is an
    axis under its dotted name (`train.lr: [1e-4, 1e-3]`): a list of values, or in random
    mode also {loguniform: [lo, hi]}, {uniform: [lo, hi]} or {choice: [...]}. `data.seed`
    is one too: replicate datasets of every regime (a list, or choice)."""

    # Dotted keys are the extra axes; `_known_keys` refuses any other unknown key.
    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Axis]
    # The sections whose settings a key may name; a subclass gives them (schema.SweepSearch).
    sections: ClassVar[dict[str, type[BaseModel]]] = {}

    mode: Literal["grid", "random"] = Field("grid", description="grid or random search")
    beta: Annotated[list[Scale], AfterValidator(distinct)] = Field(
        min_length=1, description=f"training betas, distinct, each {SCALE_RANGE}")
    regime: Annotated[list[str], AfterValidator(distinct)] | None = Field(
        None, min_length=1, description="regime names, distinct (default: all regimes)")
    seed: Annotated[list[Seed], AfterValidator(distinct)] = Field(
        [0], min_length=1, description="training seeds, distinct (each 0 to 2,147,483,647)")
    num_samples: Int = count(1, MAX_TRIALS, "random mode: trials drawn")
    scheduler: Scheduler | None = Field(
        None, description="early stopping of unpromising trials (default: none, every trial "
        "runs train.steps)")

    @classmethod
    @cache
    def settings(cls) -> dict[str, FieldInfo]:
        """Every setting of the sections by its dotted name."""
        return {dotted(path): field for name, model in cls.sections.items()
                for path, field in settings_of(model, (name,)).items()}

    @classmethod
    @cache
    def field_type(cls, key: str) -> TypeAdapter:
        """What a value of the axis `key` must be: its setting's field, bounds included."""
        field = cls.settings()[key]
        return TypeAdapter(Annotated[field.annotation, field])

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys(cls, data: object, handler) -> Search:
        """Refuse keys that name no field or sweepable setting, each with its reason, beside
        the errors of the other fields (a refused key must not hide a bad `beta`)."""
        if not isinstance(data, dict):
            return handler(data)
        problems = {key: problem for key in data if (problem := cls.key_problem(key))}
        errors = [InitErrorDetails(type=PydanticCustomError("value_error", problem), loc=(),
                                   input=data[key]) for key, problem in problems.items()]
        try:
            search = handler({k: v for k, v in data.items() if k not in problems})
        except ValidationError as err:
            errors = relocated(err, ()) + errors
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return search

    @classmethod
    def key_problem(cls, key: object) -> str | None:
        """Why `key` is no field of a search nor a sweepable setting (None: it is one)."""
        if not isinstance(key, str) or key in cls.model_fields:
            return None
        path = parse_or_none(key)
        if not (path and path[0] in cls.sections):
            return (f"unknown field `{key}` (not in the schema)"
                    + nearest(key, [*cls.model_fields, *cls.settings()]))
        if key != DATA_SEED and any(key == p or key.startswith(f"{p}.") for p in PREPARED):
            return (f"`{key}` cannot be a search axis: it is read while the regime datasets, "
                    "reference caches and evaluation data are prepared, once for all trials "
                    "before any starts; run one sweep per value instead")
        if key not in cls.settings():
            return f"unknown setting `{key}`" + nearest(key, list(cls.settings()))
        return None

    @model_validator(mode="after")
    def _lists_in_grid(self) -> Search:
        if self.mode == "grid":
            drawn = [k for k, v in self.axes.items() if isinstance(v, Distribution)]
            if drawn:
                raise ValueError(f"{', '.join(drawn)}: a distribution needs mode: random "
                                 "(grid mode takes a list of values)")
        return self

    @model_validator(mode="after")
    def _data_seeds_known(self) -> Search:
        axis = self.axes.get(DATA_SEED)
        if isinstance(axis, Distribution) and axis.kind != "choice":
            raise ValueError(f"{DATA_SEED}: each value is a dataset built before the trials "
                             "start, so give a list or {choice: [...]}, not a range")
        return self

    @model_validator(mode="after")
    def _typed(self) -> Search:
        """Each axis value as its setting's field types it (YAML reads `1e-4` as text), once
        for the whole sweep; a value the field refuses is named at its place
        (`search.train.lr[1]`)."""
        errors: list[InitErrorDetails] = []
        typed = {key: self.typed_axis(key, axis, errors) for key, axis in self.axes.items()}
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        # The model is frozen to its users; this is its own validation filling it in.
        self.__pydantic_extra__.update(typed)
        return self

    def typed_axis(self, key: str, axis: Axis, errors: list[InitErrorDetails]) -> Axis | None:
        where = (key,) if isinstance(axis, list) else (key, axis.kind)
        values = []
        for i, value in enumerate(axis_values(axis)):
            try:
                values.append(self.field_type(key).validate_python(value))
            except ValidationError as err:
                errors += relocated(err, (*where, i))
        if len(values) < len(axis_values(axis)):
            return None  # the refused values' errors say why
        try:  # typed, values may now repeat (1e-3 and "1e-3") or leave their order
            return AXES.validate_python(values if isinstance(axis, list) else
                                        {axis.kind: values})
        except ValidationError as err:
            errors += relocated(err, (key,))
            return None

    @property
    def axes(self) -> dict[str, Axis]:
        """The train.* / eval.* axes and data.seed, by dotted path."""
        return dict(self.__pydantic_extra__ or {})

    def data_seeds(self) -> list[int] | None:
        """The data.seed axis's values, each a dataset of every regime (None: no such axis,
        every trial uses the file's data.seed)."""
        axis = self.axes.get(DATA_SEED)
        return None if axis is None else axis_values(axis)

    def points(self) -> list[dict[str, tuple[tuple, object]]]:
        """The settings the rules across fields are checked on, each value with its place in
        the search: every grid point; in random mode, where each axis is drawn on its own,
        each value (a bound or a choice) with the file's other settings."""
        placed = {key: [((key, i) if isinstance(axis, list) else (key, axis.kind, i), value)
                        for i, value in enumerate(axis_values(axis))]
                  for key, axis in self.axes.items()}
        if not placed:
            return []
        if self.mode == "grid":
            return [dict(zip(placed, point, strict=True))
                    for point in itertools.product(*placed.values())]
        return [{key: value} for key, values in placed.items() for value in values]


def axis_values(axis: Axis) -> list:
    return axis if isinstance(axis, list) else axis.values


def parse_or_none(key: str) -> KeyPath | None:
    try:
        return parse(key)
    except ValueError:
        return None
