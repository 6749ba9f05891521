"""The sweep file: a pydantic v2 schema with a description per field and cross-field checks.

A sweep is beta x regime x seed; every other section is shared by all its trials.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # used in paths and trial names


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a sweep file must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# Bump when didray.worlds.toy changes how a world, its teacher or pi_ref's SFT are built, so
# cached references (named by `ToyWorldSpec.recipe_hash`) are not reused wrongly.
TOY_RECIPE_VERSION = "toy-v1"


class ToyWorldSpec(Strict):
    """The toy language world's recipe (didray.worlds.toy); pi_ref is fitted from it once and
    cached under its `recipe_hash`.

    Upper bounds are the task language's sizes (didray.worlds.toy.language; a test checks they
    agree) or caps that keep a typo from fitting pi_ref for hours.
    """

    seed: int = Field(0, description="seed of the task language and of pi_ref's fit")
    n_open_prompts: int = Field(
        6, ge=1, le=45, description="open-ended (instruction) prompts, 1..45: drawn from 3 verbs "
        "x L counts x the categories with >= 2 alphabet words (build_world names the exact count)")
    n_fact_prompts: int = Field(
        6, ge=1, le=48, description="fact (knowledge QA) prompts, 1..48: drawn from 16 entities "
        "x the relations whose category has >= 2 alphabet words")
    response_alphabet: int = Field(9, ge=6, le=12, description="A: content words, 6..12")
    max_response_tokens: int = Field(
        3, ge=1, le=5, description="L: content words per response (before </s>), 1..5")
    fact_known_rate: float = Field(
        0.6, ge=0, le=1, description="fraction of fact prompts the SFT teacher knows, 0..1")
    hidden_size: int = Field(64, ge=1, le=1024, description="pi_ref's hidden size, 1..1024")
    n_layers: int = Field(2, ge=1, le=16, description="pi_ref's layers, 1..16")
    n_heads: int = Field(2, ge=1, le=32, description="attention heads, 1..32")
    head_dim: int = Field(
        32, ge=32, le=256, description="size of a head, 32..256 (vLLM's CPU attention rejects "
        "smaller heads)")
    intermediate_size: int = Field(128, ge=1, le=4096, description="MLP width, 1..4096")
    sft_steps: int = Field(600, ge=1, le=100_000, description="SFT steps that fit pi_ref, "
                           "1..100000")
    sft_lr: float = Field(3e-3, gt=0, le=1, description="SFT learning rate, in (0, 1]")
    sft_batch_size: int = Field(64, ge=1, le=4096, description="SFT batch size, 1..4096")
    sft_samples_per_prompt: int = Field(
        64, ge=1, le=10_000, description="teacher responses per prompt in the SFT corpus, "
        "1..10000")

    def recipe_hash(self) -> str:
        """sha256 (first 16 hex) of the recipe version and every spec field."""
        blob = json.dumps({"recipe": TOY_RECIPE_VERSION, "spec": self.model_dump()},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class HFModel(Strict):
    """A Hugging Face causal LM: pi_ref as published; the policy starts from it."""

    path: str = Field(description="hub name, local directory, or python-package:NAME[/sub]")
    gguf_file: str | None = Field(
        None, description="a GGUF file inside `path`, dequantised once to safetensors")
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


class PolicyGradientPairs(Strict):
    """Chosen: the best-scored response; rejected: sampled from pi_ref."""

    kind: Literal["pg"]
    name: str = Field(pattern=NAME_PATTERN, description="label used in results")


class PowerLaw(Strict):
    """docs/design.md §1.2-1.4: y_w ~ pi_ref, y_l ~ pi_l ∝ pi_ref^(1+b) pi_star^(-b), BT labels.

    pi_star = pi_ref * exp(score / tau): tau sets the DID entropy (small tau, low entropy).
    """

    kind: Literal["powerlaw"]
    name: str = Field(pattern=NAME_PATTERN, description="label used in results")
    tau: PositiveFloat = Field(description="temperature of pi_star; the DID-entropy knob")
    beta_data: PositiveFloat = Field(0.1, description="power-law exponent that builds the data")
    candidates: PositiveInt = Field(
        32, description="pi_ref candidates per prompt for importance resampling of the rejected"
    )


Regime = Annotated[OffPolicy | PolicyGradientPairs | PowerLaw, Field(discriminator="kind")]


class Data(Strict):
    """How preference pairs are built for every regime."""

    pairs_per_prompt: PositiveInt = Field(8, description="preference pairs drawn per prompt")
    seed: int = Field(0, description="seed of the data (fixed across trial seeds)")
    source: str | None = Field(
        None, description="world: hf: TRL-format dataset (hub name or local path) with a "
        "`prompt` column; `chosen`/`rejected` for offpolicy and pg, `reference` for the "
        "embedding scorer")
    split: str = Field("train", description="world: hf: split of `source`")
    max_prompts: PositiveInt | None = Field(None, description="world: hf: first N prompts only")


class SamplerSettings(Strict):
    """The sampler actors that draw pi_ref's responses for the regimes and evaluate policies."""

    backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM when it is installed, else transformers")
    actors: PositiveInt = Field(1, description="sampler actors in the pool")
    cpus_per_actor: PositiveFloat = Field(1.0, description="CPUs each actor reserves")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs each actor reserves")
    temperature: PositiveFloat = Field(1.0, description="sampling temperature of pi_ref draws")
    max_tokens: PositiveInt = Field(
        64, description="world: hf: longest sampled response (toy: its response length)")


class Train(Strict):
    """The DPO loop run by each trial's Ray Train workers."""

    lr: PositiveFloat = Field(1e-3, description="learning rate")
    steps: PositiveInt = Field(40, description="optimizer steps per trial")
    batch_size: PositiveInt = Field(8, description="pairs per optimizer step, over all workers")
    grad_accum: PositiveInt = Field(1, description="micro-batches accumulated per step")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="torch optimizer")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay")
    loss_type: Literal["sigmoid", "ipo"] = Field("sigmoid", description="DPO loss")
    max_prompt_tokens: PositiveInt = Field(16, description="prompts are left-truncated to this")
    max_response_tokens: PositiveInt = Field(8, description="responses are truncated to this")
    checkpoint_every: PositiveInt = Field(20, description="save a checkpoint every k steps")
    report_every: PositiveInt = Field(5, description="ray.train.report metrics every k steps")
    max_failures: int = Field(
        2, ge=0, le=100, description="restarts of a trial's Train workers from the latest "
        "checkpoint after a lost worker or node (and of the trial after a lost trial process)")

    @model_validator(mode="after")
    def _batch_divides(self) -> Train:
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of grad_accum "
                f"({self.grad_accum})"
            )
        return self


class Search(Strict):
    """The swept axes. grid: every combination; random: num_samples draws."""

    mode: Literal["grid", "random"] = Field("grid", description="grid or random search")
    beta: list[PositiveFloat] = Field(min_length=1, description="training betas")
    regime: list[str] | None = Field(None, description="regime names (default: all regimes)")
    seed: list[int] = Field([0], min_length=1, description="training seeds")
    num_samples: PositiveInt = Field(1, description="random mode: trials drawn")


class Scaling(Strict):
    """Ray resources for each trial and the whole sweep."""

    workers_per_trial: PositiveInt = Field(1, description="Ray Train workers (DDP ranks)")
    cpus_per_worker: PositiveFloat = Field(1.0, description="CPUs per worker")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker (0: CPU, gloo)")
    max_concurrent_trials: PositiveInt = Field(1, description="trials running at once")


class Scorer(Strict):
    """The instruction-following score (hf world): a reward model, or embedding similarity to
    each prompt's reference response where no reward model can be had."""

    kind: Literal["reward_model", "embedding"] = Field(description="how responses are scored")
    path: str = Field(description="hub name, local directory, or python-package:NAME[/sub]")


class QASet(Strict):
    """The knowledge-QA score (hf world)."""

    source: str = Field(description="dataset with question, answer (str or aliases), choices")
    split: str = Field("train", description="split of `source`")
    limit: PositiveInt | None = Field(None, description="first N questions only")
    mode: Literal["multiple_choice", "exact_match"] = Field(
        "multiple_choice", description="choice log-likelihood, or greedy answer exact match")


class Eval(Strict):
    """What is measured on every trained policy."""

    exact: bool = Field(True, description="toy world: exact DID entropy at every report")
    did_samples: PositiveInt = Field(32, description="K samples per prompt for DID estimates")
    bootstrap: PositiveInt = Field(200, description="bootstrap resamples for estimate CIs")
    prompts: PositiveInt | None = Field(
        None, description="world: hf: evaluate on the first N data prompts (default: all)")
    scorer: Scorer | None = Field(None, description="world: hf: instruction-following score")
    qa: QASet | None = Field(None, description="world: hf: knowledge-QA set")


class Sweep(Strict):
    """A whole sweep file."""

    name: str = Field(pattern=NAME_PATTERN, description="results go to <storage>/<name>/")
    world: Literal["toy", "hf"] = Field("toy", description="where policies live")
    storage: Path = Field(Path("results"), description="results root (local path)")
    model: Model = Field(default_factory=Model, description="the policy / pi_ref")
    data: Data = Field(default_factory=Data, description="preference data")
    regimes: list[Regime] = Field(min_length=1, description="DID-entropy regimes of the data")
    train: Train = Field(default_factory=Train, description="DPO loop")
    search: Search = Field(description="swept axes")
    scaling: Scaling = Field(default_factory=Scaling, description="Ray resources")
    eval: Eval = Field(default_factory=Eval, description="evaluation")
    sampler: SamplerSettings = Field(default_factory=SamplerSettings,
                                     description="sampler actors")

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
        if self.eval.exact and "exact" in self.eval.model_fields_set:
            raise ValueError("eval.exact: true needs world: toy (hf responses cannot be "
                             "enumerated); remove it")
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
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"regime names must be unique; repeated: {', '.join(duplicates)}")
        unknown = [r for r in self.search.regime or [] if r not in names]
        if unknown:
            raise ValueError(
                f"search.regime names {unknown} are not defined in regimes ({', '.join(names)})"
            )
        return self

    def trial_count(self) -> int:
        s = self.search
        grid = len(s.beta) * len(self.regime_names()) * len(s.seed)
        return grid if s.mode == "grid" else s.num_samples

    def regime_names(self) -> list[str]:
        return list(self.search.regime or [r.name for r in self.regimes])

    def regime(self, name: str) -> OffPolicy | PolicyGradientPairs | PowerLaw:
        return next(r for r in self.regimes if r.name == name)
