"""The sweep file: a pydantic v2 schema with a description per field and cross-field checks.

A sweep is beta x regime x seed x any swept train.* / eval.* setting (`Search`); every other
section is shared by all its trials. Counts and
sizes have finite limits, stated in their descriptions: a typo must not run for days or exhaust
memory. Numbers are finite and never booleans.
"""

from __future__ import annotations

import difflib
import math
import types
from collections import Counter
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from didray.files import json_hash
from didray.metrics import BOTH, STEP
from didray.storage import check_location

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # used in paths and trial names
SEED_MAX = 2**31 - 1  # numpy's and Ray's seeds are 32-bit
MAX_TRIALS = 10_000


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


# Bump when didray.worlds.toy changes how a world, its teacher or pi_ref's SFT are built, so
# cached references (named by `ToyWorldSpec.recipe_hash`) are not reused wrongly.
# toy-v2: held-out prompts, drawn after the training ones, join the SFT corpus.
TOY_RECIPE_VERSION = "toy-v2"


class ToyWorldSpec(Strict):
    """The toy language world's recipe (didray.worlds.toy); pi_ref is fitted from it once and
    cached under its `recipe_hash`.

    Upper bounds are the task language's sizes (didray.worlds.toy.language; a test checks they
    agree) or caps that keep a typo from fitting pi_ref for hours.
    """

    seed: Seed = Field(
        0, description="seed of the task language and of pi_ref's fit (0 to 2,147,483,647)")
    n_open_prompts: Int = Field(
        6, ge=1, le=44, description="open-ended (instruction) training prompts, 1 to 44: drawn "
        "from 3 verbs x L counts x the categories with >= 2 alphabet words (at most 45; "
        "build_world names the exact count), leaving at least one held out")
    n_fact_prompts: Int = Field(
        6, ge=1, le=47, description="fact (knowledge QA) training prompts, 1 to 47: drawn from "
        "16 entities x the relations whose category has >= 2 alphabet words (at most 48), "
        "leaving at least one held out")
    n_heldout_open_prompts: Int = Field(
        8, ge=1, le=44, description="held-out open prompts, 1 to 44: evaluation only, drawn "
        "after the training prompts from the open candidates left; with n_open_prompts at "
        "most 45")
    n_heldout_fact_prompts: Int = Field(
        8, ge=1, le=47, description="held-out fact prompts, 1 to 47: evaluation only, drawn "
        "after the training prompts from the fact candidates left; with n_fact_prompts at most "
        "48. fact_known_rate applies to them too")
    response_alphabet: Int = Field(9, ge=6, le=12, description="A: content words, 6 to 12")
    max_response_tokens: Int = Field(
        3, ge=1, le=5, description="L: content words per response (before </s>), 1 to 5")
    fact_known_rate: Float = Field(
        0.6, ge=0, le=1, description="fraction of fact prompts the SFT teacher knows, 0 to 1")
    hidden_size: Int = count(64, 1024, "pi_ref's hidden size")
    n_layers: Int = count(2, 16, "pi_ref's layers")
    n_heads: Int = count(2, 32, "attention heads")
    head_dim: Int = Field(
        32, ge=32, le=256, description="size of a head, 32 to 256 (vLLM's CPU attention "
        "rejects smaller heads)")
    intermediate_size: Int = count(128, 4096, "MLP width")
    sft_steps: Int = count(600, 100_000, "SFT steps that fit pi_ref")
    sft_lr: Positive = Field(3e-3, le=1, description="SFT learning rate, in (0, 1]")
    sft_batch_size: Int = count(64, 4096, "SFT batch size")
    sft_samples_per_prompt: Int = count(
        64, 10_000, "teacher responses per prompt in the SFT corpus")

    @model_validator(mode="after")
    def _prompts_exist(self) -> ToyWorldSpec:
        # The language's largest candidate sets; smaller alphabets have fewer (build_world).
        for family, most in (("open", 45), ("fact", 48)):
            train = getattr(self, f"n_{family}_prompts")
            held = getattr(self, f"n_heldout_{family}_prompts")
            if train + held > most:
                raise ValueError(f"n_{family}_prompts + n_heldout_{family}_prompts = "
                                 f"{train + held}: at most {most} {family} prompts exist")
        return self

    def recipe_hash(self) -> str:
        """sha256 (first 16 hex) of the recipe version and every spec field."""
        return json_hash({"recipe": TOY_RECIPE_VERSION, "spec": self.model_dump()})


class HFModel(Strict):
    """A Hugging Face causal LM: pi_ref as published; the policy starts from it."""

    path: str = Field(description="hub name, local directory, or python-package:NAME[/sub]")
    gguf_file: str | None = Field(
        None, description="a GGUF file inside `path`, dequantised once to safetensors")
    revision: str | None = Field(
        None, description="hub revision (tag or commit) of a hub `path`, downloaded once to "
        "the store; in cache keys")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="weights and training dtype (bfloat16 on GPUs)")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory")


class Model(Strict):
    """The policy being trained; it starts as pi_ref."""

    toy: ToyWorldSpec = Field(default_factory=ToyWorldSpec, description="toy world recipe")
    hf: HFModel | None = Field(None, description="world: hf: the model")


class OffPolicy(Strict):
    """Pairs as given: two responses from a fixed off-policy distribution, ordered by reward."""

    kind: Literal["offpolicy"]
    name: str = Field(pattern=NAME_PATTERN, description="label used in results")


class Tilted(Strict):
    """A target pi_star = pi_ref * exp(score / tau), given by `tau` or by the data DID entropy
    H(q_{pi_star/pi_ref}) it should have (docs/design.md §5.4: the world solves for tau)."""

    tau: Positive | None = Field(
        None, description="temperature of pi_star; give tau, did_entropy or did_entropy_fraction")
    did_entropy: Positive | None = Field(
        None, description="the data DID entropy H(q_{pi_star/pi_ref}) to reach, in nats; the "
        "world solves for tau (toy: exactly; hf: on an SNIS estimate)")
    did_entropy_fraction: Annotated[float, AllowInfNan(False), Gt(0), Lt(1),
                                    BeforeValidator(refuse_bool)] | None = Field(
        None, description="the same as a fraction of log N, in (0, 1) (toy only)")
    beta_data: Positive = Field(0.1, description="power-law exponent that builds the data")
    candidates: Int = count(
        32, 1024, "pi_ref candidates per pair for importance resampling of the tilted side")

    def tilt_fields(self) -> list[str]:
        return [f for f in ("tau", "did_entropy", "did_entropy_fraction")
                if getattr(self, f) is not None]

    def needs_tilt(self) -> bool:
        return True

    @model_validator(mode="after")
    def one_tilt(self) -> Tilted:
        given = self.tilt_fields()
        if self.needs_tilt() and len(given) != 1:
            raise ValueError("give exactly one of tau, did_entropy, did_entropy_fraction"
                             + (f" (got {', '.join(given)})" if given else ""))
        if not self.needs_tilt() and given:
            raise ValueError(f"{given[0]} applies only with chosen: tilted (the chosen "
                             "response given by the world is not tilted)")
        return self


class PolicyGradientPairs(Tilted):
    """The paper's on-policy-rejected case (pi_l = pi_ref, docs/design.md §5.2): rejected ~
    pi_ref; chosen from a named source that is never the evaluation's judge. `tilted`:
    pi_w = pi_ref * exp(beta_data * score / tau), Bradley-Terry labels as for powerlaw;
    `given`: the world's given chosen (toy: the better of two uniform draws; hf: the
    dataset's chosen, else its reference), no labels drawn."""

    kind: Literal["pg"]
    name: str = Field(pattern=NAME_PATTERN, description="label used in results")
    chosen: Literal["given", "tilted"] = Field(
        "given", description="where the chosen response comes from")

    def needs_tilt(self) -> bool:
        return self.chosen == "tilted"


class PowerLaw(Tilted):
    """docs/design.md §1.2-1.4: y_w ~ pi_ref, y_l ~ pi_l ∝ pi_ref^(1+b) pi_star^(-b), BT labels.

    pi_star = pi_ref * exp(score / tau): tau sets the DID entropy (small tau, low entropy).
    """

    kind: Literal["powerlaw"]
    name: str = Field(pattern=NAME_PATTERN, description="label used in results")


Regime = Annotated[OffPolicy | PolicyGradientPairs | PowerLaw, Field(discriminator="kind")]
# The tags of the regime union; pydantic puts the matched one in an error's location.
REGIME_KINDS = tuple(get_args(m.model_fields["kind"].annotation)[0]
                     for m in (OffPolicy, PolicyGradientPairs, PowerLaw))


class Data(Strict):
    """How preference pairs are built for every regime."""

    pairs_per_prompt: Int = count(8, 1024, "preference pairs drawn per prompt")
    seed: Seed = Field(
        0, description="seed of the data, fixed across trial seeds (0 to 2,147,483,647)")
    source: str | None = Field(
        None, description="world: hf: TRL-format dataset (hub name or local path) with a "
        "`prompt` column; `chosen`/`rejected` for offpolicy and pg, `reference` for the "
        "embedding scorer")
    split: str = Field("train", description="world: hf: split of `source`")
    config: str | None = Field(
        None, description="world: hf: the config of a multi-config `source`")
    revision: str | None = Field(
        None, description="world: hf: hub revision (tag or commit) of `source`, in cache keys")
    max_prompts: IntOrNone = count(None, 1_000_000, "world: hf: first N prompts only")


class SamplerSettings(Strict):
    """The sampler actors that draw pi_ref's responses for the regimes and evaluate policies."""

    backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM when it is installed, else transformers")
    actors: Int = count(1, 256, "sampler actors in the pool")
    cpus_per_actor: Float = amount(1.0, 1024, "CPUs each actor reserves")
    gpus_per_actor: Float = amount(0.0, 16, "GPUs each actor reserves", zero=True)
    temperature: Positive = Field(1.0, description="sampling temperature of pi_ref draws")
    max_tokens: Int = count(
        64, 32_768, "world: hf: longest sampled response (toy: its response length)")


class Train(Strict):
    """The DPO loop run by each trial's Ray Train workers."""

    lr: Positive = Field(1e-3, description="learning rate")
    steps: Int = count(40, 100_000, "optimizer steps per trial")
    batch_size: Int = count(
        8, 8192, "pairs per optimizer step, over all workers; a multiple of "
        "scaling.workers_per_trial x grad_accum")
    grad_accum: Int = count(1, 1024, "micro-batches accumulated per step")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="torch optimizer")
    weight_decay: Float = Field(0.0, ge=0, description="decoupled weight decay")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning rate after warmup: constant, linear decay to 0 at "
        "the last step, or half a cosine to 0 (docs/design.md §3.4)")
    warmup_steps: Int = Field(
        0, ge=0, le=100_000, description="steps of linear warmup from 0 to lr, 0 to 100,000 "
        "(less than steps)")
    max_grad_norm: Positive | None = Field(
        None, description="clip each step's gradient to this global L2 norm (default: off)")
    loss_type: Literal["sigmoid", "ipo", "simpo"] = Field(
        "sigmoid", description="sigmoid: DPO; ipo: IPO's squared loss; simpo: SimPO, "
        "reference-free and length-normalised (didray/core/dpo.py)")
    label_smoothing: Float = Field(
        0.0, ge=0, le=0.5, description="sigmoid and simpo: the probability a label is flipped "
        "(conservative DPO), 0 to 0.5")
    simpo_gamma: Float = Field(
        0.5, ge=0, le=10, description="simpo: the target reward margin gamma, 0 to 10")
    max_prompt_tokens: Int = count(16, 32_768, "prompts are left-truncated to this")
    max_response_tokens: Int = count(8, 32_768, "responses are truncated to this")
    checkpoint_every: IntOrNone = count(
        None, 100_000, "save a checkpoint every k steps (default: at every report): checkpoints "
        "are saved at report steps, so k is a multiple of report_every, and at most steps (the "
        "last step always saves)")
    report_every: Int = count(5, 100_000, "ray.train.report metrics every k steps")
    max_failures: Int = Field(
        2, ge=0, le=100, description="restarts of a trial's Train workers from the latest "
        "checkpoint after a lost worker or node, and of the trial after a lost trial process "
        "(0 to 100)")

    @model_validator(mode="after")
    def _checkpoints_at_reports(self) -> Train:
        if self.checkpoint_every is None:
            return self
        every = f"checkpoint_every ({self.checkpoint_every})"
        if self.checkpoint_every > self.steps:
            raise ValueError(f"{every} must be <= steps ({self.steps}): otherwise no checkpoint "
                             "is saved before the last step")
        if self.checkpoint_every % self.report_every:
            raise ValueError(f"{every} must be a multiple of report_every "
                             f"({self.report_every}): checkpoints are saved at report steps only")
        return self

    @model_validator(mode="after")
    def _schedule_fits(self) -> Train:
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < steps "
                             f"({self.steps}): training would end before the warmup does")
        if self.loss_type == "ipo" and self.label_smoothing:
            raise ValueError("label_smoothing applies to loss_type sigmoid and simpo, not ipo")
        return self

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.report_every


# A swept setting's value as YAML gives it; the field it is applied to types it (`axis_values`).
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
AXIS_SECTIONS = ("train", "eval")
# Read while preparing the regime datasets, reference caches and (hf) pi_ref's evaluation,
# once for every trial: a per-trial value would meet data prepared for another value.
PREPARED = ("data", "train.max_prompt_tokens", "train.max_response_tokens", "eval.did_samples",
            "eval.prompts", "eval.scorer", "eval.qa")


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


class Search(Strict):
    """The swept axes. grid: every combination; random: num_samples draws. At most 10,000
    trials either way. Besides beta, regime and seed, any train.* or eval.* setting is an
    axis under its dotted name (`train.lr: [1e-4, 1e-3]`): a list of values, or in random
    mode also {loguniform: [lo, hi]}, {uniform: [lo, hi]} or {choice: [...]}."""

    # Dotted keys are the extra axes; `_known_keys` refuses any other unknown key.
    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Axis]

    mode: Literal["grid", "random"] = Field("grid", description="grid or random search")
    beta: Annotated[list[Positive], AfterValidator(distinct)] = Field(
        min_length=1, description="training betas, distinct")
    regime: Annotated[list[str], AfterValidator(distinct)] | None = Field(
        None, description="regime names, distinct (default: all regimes)")
    seed: Annotated[list[Seed], AfterValidator(distinct)] = Field(
        [0], min_length=1, description="training seeds, distinct (each 0 to 2,147,483,647)")
    num_samples: Int = count(1, MAX_TRIALS, "random mode: trials drawn")
    scheduler: Scheduler | None = Field(
        None, description="early stopping of unpromising trials (default: none, every trial "
        "runs train.steps)")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        for key in data:
            if not isinstance(key, str) or key in cls.model_fields:
                continue
            if key.partition(".")[0] in (*AXIS_SECTIONS, "data"):
                check_axis_path(key)
            else:
                raise ValueError(f"unknown field `{key}` (not in the schema)"
                                 + nearest(key, [*cls.model_fields, *axis_paths()]))
        return data

    @model_validator(mode="after")
    def _lists_in_grid(self) -> Search:
        if self.mode == "grid":
            drawn = [k for k, v in self.axes.items() if isinstance(v, Distribution)]
            if drawn:
                raise ValueError(f"{', '.join(drawn)}: a distribution needs mode: random "
                                 "(grid mode takes a list of values)")
        return self

    @property
    def axes(self) -> dict[str, Axis]:
        """The train.* / eval.* axes, by dotted path."""
        return dict(self.__pydantic_extra__ or {})


def axis_paths(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Every dotted train.* / eval.* / data.* setting (nested sections included)."""
    if model is None:
        return [p for section, m in (("train", Train), ("eval", Eval), ("data", Data))
                for p in axis_paths(m, f"{section}.")]
    paths = []
    for name, field in model.model_fields.items():
        inner = models_in(field.annotation)
        paths += axis_paths(inner[0], f"{prefix}{name}.") if len(inner) == 1 else \
            [f"{prefix}{name}"]
    return paths


def check_axis_path(path: str) -> None:
    """Refuse a search key that is no sweepable setting, saying why."""
    if any(path == p or path.startswith(f"{p}.") for p in PREPARED):
        raise ValueError(
            f"`{path}` cannot be a search axis: it is read while the regime datasets, reference "
            "caches and evaluation data are prepared, once for all trials before any starts; "
            "run one sweep per value instead")
    if path not in axis_paths():
        raise ValueError(f"unknown setting `{path}`" + nearest(path, axis_paths()))


def with_setting(data: dict, path: str, value: object) -> dict:
    """A copy of sweep data (or of one section's data) with the dotted `path` set."""
    head, _, rest = path.partition(".")
    inner = data.get(head)
    inner = inner if isinstance(inner, dict) else {}
    return {**data, head: with_setting(inner, rest, value) if rest else value}


def setting(model: BaseModel, path: str) -> object:
    for part in path.split("."):
        model = getattr(model, part)
    return model


class Scaling(Strict):
    """Ray resources for each trial and the whole sweep."""

    workers_per_trial: Int = count(1, 1024, "Ray Train workers (DDP ranks)")
    cpus_per_worker: Float = amount(1.0, 1024, "CPUs per worker")
    gpus_per_worker: Float = amount(0.0, 16, "GPUs per worker (0: CPU, gloo)", zero=True)
    max_concurrent_trials: Int = count(1, 1024, "trials running at once")


class Scorer(Strict):
    """The instruction-following score (hf world): a reward model, or embedding similarity to
    each prompt's reference response where no reward model can be had."""

    kind: Literal["reward_model", "embedding"] = Field(description="how responses are scored")
    path: str = Field(description="hub name, local directory, or python-package:NAME[/sub]")
    revision: str | None = Field(
        None, description="hub revision (tag or commit) of a hub `path`, in cache keys")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="the scorer model's dtype (bfloat16 on GPUs)")
    # 0 by default: the scorer actor lives through a whole stage but scores in short bursts;
    # a reserved CPU would sit idle most of that time and, on a small node, keep a Train
    # worker or sampler actor from ever starting (docs/design.md §6.2).
    cpus: Float = amount(0.0, 1024, "CPUs the scorer actor reserves; 0 shares the node's",
                         zero=True)
    gpus: Float = amount(0.0, 16, "GPUs the scorer actor reserves", zero=True)


class QASet(Strict):
    """The knowledge-QA score (hf world)."""

    source: str = Field(description="dataset with question, answer (str or aliases), choices")
    split: str = Field("train", description="split of `source`")
    config: str | None = Field(
        None, description="the config of a multi-config `source` (e.g. `all` for cais/mmlu)")
    revision: str | None = Field(
        None, description="hub revision (tag or commit) of `source`, in cache keys")
    limit: IntOrNone = count(None, 1_000_000, "first N questions only")
    mode: Literal["multiple_choice", "exact_match"] = Field(
        "multiple_choice", description="choice log-likelihood, or greedy answer exact match")


class Judge(Strict):
    """Toy world: what the held-out instruction score rewards (docs/design.md §6.1).

    instruction_score = (1 - w) E_{y~pi}[judge(y)] + w coverage_k(pi). w decides whether
    instruction following means answering acceptably (w = 0) or also covering the many
    acceptable answers of an open prompt; it changes no data and no pi_ref.
    """

    diversity_weight: Float = Field(
        0.5, ge=0, le=1, description="w, the weight of coverage in instruction_score, 0 to 1")
    k: Int = count(32, 1024, "samples per prompt behind coverage_k (the paper draws 32)")


class Eval(Strict):
    """What is measured on every trained policy."""

    exact: bool = Field(True, description="toy world: exact DID entropy and scores at the "
                        "reports `every` picks; false: at the last step only")
    every: Int = count(
        1, 100_000, "toy world: the exact evaluation runs at every N-th report and always at "
        "the last step (its results are the trial's); 1: at every report. Reports in between "
        "carry no exact metrics. Above 1 it needs eval.exact: true and is at most the reports "
        "before the last step, (train.steps - 1) // train.report_every")
    did_samples: Int = count(32, 1024, "K samples per prompt for DID estimates")
    bootstrap: Int = count(200, 100_000, "bootstrap resamples for the estimates' spreads")
    prompts: IntOrNone = count(
        None, 100_000, "world: hf: evaluate on the first N data prompts (default: all)")
    scorer: Scorer | None = Field(None, description="world: hf: instruction-following score")
    qa: QASet | None = Field(None, description="world: hf: knowledge-QA set")
    judge: Judge = Field(default_factory=Judge,
                         description="world: toy: the held-out instruction score's weights")


class MLflowTracking(Strict):
    """One MLflow run per trial, in one experiment per sweep."""

    tracking_uri: str | None = Field(
        None, description="server or store, e.g. http://mlflow:5000 or file:///shared/mlruns "
        "(default: MLFLOW_TRACKING_URI, else MLflow's own)")
    experiment: str | None = Field(None, description="experiment name (default: the sweep name)")


class WandbTracking(Strict):
    """One W&B run per trial, grouped per sweep."""

    project: str = Field(description="W&B project")
    group: str | None = Field(None, description="run group (default: the sweep name)")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="W&B mode (default: WANDB_MODE, else online)")


class Tracking(Strict):
    """Experiment trackers; runs are tagged with the trial's beta, regime and seed."""

    mlflow: MLflowTracking | None = Field(None, description="MLflow (pip install didray[mlflow])")
    wandb: WandbTracking | None = Field(None, description="Weights & Biases (didray[wandb])")


class Sweep(Strict):
    """A whole sweep file."""

    name: str = Field(pattern=NAME_PATTERN, description="results go to <storage>/<name>/")
    world: Literal["toy", "hf"] = Field("toy", description="where policies live")
    storage: Annotated[str, BeforeValidator(check_location)] = Field(
        "results", description="results root: a local directory, or a URI pyarrow opens "
        "(s3://, gs://, abfs://, hdfs://; docs/design.md §3.5)")
    model: Model = Field(default_factory=Model, description="the policy / pi_ref")
    data: Data = Field(default_factory=Data, description="preference data")
    regimes: list[Regime] = Field(min_length=1, description="DID-entropy regimes of the data")
    train: Train = Field(default_factory=Train, description="DPO loop")
    search: Search = Field(description="swept axes")
    scaling: Scaling = Field(default_factory=Scaling, description="Ray resources")
    eval: Eval = Field(default_factory=Eval, description="evaluation")
    sampler: SamplerSettings = Field(default_factory=SamplerSettings,
                                     description="sampler actors")
    tracking: Tracking = Field(default_factory=Tracking,
                               description="experiment trackers (MLflow, W&B)")

    @model_validator(mode="before")
    @classmethod
    def _axis_values(cls, data: object) -> object:
        """Each value of a train.* / eval.* axis is applied to the sweep, which is validated
        again (a bad value is named as `search.train.lr[0]`), and is kept as that field
        types it (YAML reads `1e-4` as text)."""
        search = data.get("search") if isinstance(data, dict) else None
        if not isinstance(search, dict):
            return data
        keys = [k for k in search if isinstance(k, str) and "." in k]
        if not keys:
            return data
        base = {**data, "search": {k: v for k, v in search.items() if k not in keys}}
        try:
            for key in keys:
                check_axis_path(key)
            axes = {k: TypeAdapter(Axis).validate_python(search[k]) for k in keys}
            cls.model_validate(base)
        except (ValueError, ValidationError):
            return data  # validating `data` itself reports these, each at its place
        errors, typed = [], {}
        for key, axis in axes.items():
            typed[key] = axis_values(cls, base, key, axis, errors)
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return {**data, "search": {**search, **typed}}

    @model_validator(mode="after")
    def _world_sections(self) -> Sweep:
        hf_only = {"model.hf": self.model.hf, "data.source": self.data.source,
                   "eval.scorer": self.eval.scorer, "eval.qa": self.eval.qa}
        if self.world == "toy":
            given = [k for k, v in hf_only.items() if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to world: hf (world is toy)")
            return self
        missing = [k for k in ("model.hf", "data.source", "eval.scorer") if hf_only[k] is None]
        if missing:
            raise ValueError(f"world: hf needs {', '.join(missing)}")
        if "judge" in self.eval.model_fields_set:
            raise ValueError("eval.judge only applies to world: toy (the hf world scores with "
                             "eval.scorer); remove it")
        if self.eval.exact and "exact" in self.eval.model_fields_set:
            raise ValueError("eval.exact: true needs world: toy (hf responses cannot be "
                             "enumerated); remove it")
        return self

    @model_validator(mode="after")
    def _evaluations_at_reports(self) -> Sweep:
        every = self.eval.every
        if every == 1:
            return self
        if self.world != "toy" or not self.eval.exact:
            raise ValueError(f"eval.every ({every}) schedules the exact toy evaluation: it "
                             "needs world: toy and eval.exact: true; remove it")
        steps, report_every = self.train.steps, self.train.report_every
        reports = (steps - 1) // report_every
        if every > reports:
            raise ValueError(
                f"eval.every ({every}) must be <= the reports before the last step, "
                f"(train.steps - 1) // train.report_every = ({steps} - 1) // {report_every} "
                f"= {reports}: otherwise only the last step is evaluated (eval.exact: false "
                "says that)")
        return self

    @model_validator(mode="after")
    def _asha_fits(self) -> Sweep:
        """ASHA decides at reports before the last one (the last already paid for the final
        evaluation): its rungs must lie within them."""
        if self.search.scheduler is None:
            return self
        asha, train = self.search.scheduler.asha, self.train
        last = last_cut(train)
        if last == 0:
            raise ValueError(f"search.scheduler needs a report before the last step: "
                             f"train.steps ({train.steps}) must be > train.report_every "
                             f"({train.report_every})")
        if asha.max_t is not None and asha.max_t > last:
            raise ValueError(f"search.scheduler.asha.max_t ({asha.max_t}) must be <= the last "
                             f"report before train.steps, step {last}")
        if asha.grace_period > (asha.max_t or last):
            raise ValueError(f"search.scheduler.asha.grace_period ({asha.grace_period}) must be "
                             f"<= max_t ({asha.max_t or last}): no trial could be stopped")
        return self

    @model_validator(mode="after")
    def _responses_fit(self) -> Sweep:
        if self.world != "toy":
            return self
        need = self.model.toy.max_response_tokens + 1  # content words + </s>
        if self.train.max_response_tokens < need:
            raise ValueError(
                f"train.max_response_tokens ({self.train.max_response_tokens}) must be >= "
                f"model.toy.max_response_tokens + 1 ({need}): truncating toy responses would "
                "leave the enumerable response space"
            )
        return self

    @model_validator(mode="after")
    def _regimes_known(self) -> Sweep:
        names = [r.name for r in self.regimes]
        if same := repeated(names):
            raise ValueError(f"regime names must be unique; repeated: {', '.join(same)}")
        known = set(names)
        unknown = [r for r in self.search.regime or [] if r not in known]
        if unknown:
            raise ValueError(
                f"search.regime names {unknown} are not defined in regimes ({', '.join(names)})"
            )
        return self

    @model_validator(mode="after")
    def _batch_splits(self) -> Sweep:
        # Each DDP rank takes batch_size / workers pairs in grad_accum micro-batches; ranks with
        # unequal micro-batch counts (or none) wait forever for each other's gradients.
        workers, accum = self.scaling.workers_per_trial, self.train.grad_accum
        if self.train.batch_size % (workers * accum):
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) must be a multiple of "
                f"scaling.workers_per_trial x train.grad_accum ({workers} x {accum} = "
                f"{workers * accum}): every Ray Train worker needs the same number of pairs "
                "in each micro-batch")
        return self

    @model_validator(mode="after")
    def _trials_bounded(self) -> Sweep:
        if self.trial_count() > MAX_TRIALS:
            raise ValueError(f"the search makes {self.trial_count():,} trials; at most "
                             f"{MAX_TRIALS:,} (beta x regime x seed x each axis in grid mode)")
        return self

    def trial_count(self) -> int:
        s = self.search
        if s.mode == "random":
            return s.num_samples
        return math.prod([len(s.beta), len(self.regime_names()), len(s.seed),
                          *map(len, s.axes.values())])  # grid mode: lists only

    def regime_names(self) -> list[str]:
        return list(self.search.regime or [r.name for r in self.regimes])

    def regime(self, name: str) -> OffPolicy | PolicyGradientPairs | PowerLaw:
        return next(r for r in self.regimes if r.name == name)


def last_cut(train: Train) -> int:
    """The last report step before train.steps (0: none): where ASHA's last rung may be."""
    return (train.steps - 1) // train.report_every * train.report_every


def axis_values(sweep: type[Sweep], base: dict, key: str, axis: Axis,
                errors: list[InitErrorDetails]) -> list | dict:
    """The axis's values, each typed by the sweep `base` with it applied; a value that
    makes the sweep invalid adds its errors, located at the value (`search.<key>[i]`)."""
    where = ("search", key) if isinstance(axis, list) else ("search", key, axis.kind)
    values = axis if isinstance(axis, list) else axis.values
    typed = []
    for i, value in enumerate(values):
        try:
            typed.append(setting(sweep.model_validate(with_setting(base, key, value)), key))
        except ValidationError as err:
            errors += [InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"],
                                                                 e.get("ctx")),
                                        loc=(*where, i), input=value) for e in err.errors()]
    return typed if isinstance(axis, list) else {axis.kind: typed}
