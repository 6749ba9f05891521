"""The sweep file: a pydantic v2 schema with a description per field.

A sweep is beta x regime x seed x any swept train.* / eval.* setting (`Search`, in
didray.config.search); every other section is shared by all its trials. Counts and sizes have
finite limits, stated in their descriptions: a typo must not run for days or exhaust memory.
Numbers are finite and never booleans. The rules across fields are in didray.config.checks.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from didray.config.checks import SWEEP_RULES, TRAIN_RULES, first_problem, point_errors
from didray.config.fields import (
    NAME_PATTERN,
    SCALE_RANGE,
    Float,
    Int,
    IntOrNone,
    Positive,
    Scale,
    Seed,
    Strict,
    amount,
    count,
)
from didray.config.regimes import OffPolicy, PolicyGradientPairs, PowerLaw, Regime, Tilted
from didray.config.search import Search
from didray.files import json_hash
from didray.storage import check_location

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


class Scorer(Strict):
    """A score of responses (hf world): a reward model, or embedding similarity to each
    prompt's reference response where no reward model can be had. `eval.scorer` scores
    instruction following; `data.scorer`, where given, builds the data."""

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
    max_bad_fraction: Float = Field(
        0.01, ge=0, le=1, description="world: hf: the largest fraction (0 to 1) of a split's "
        "rows that may be unusable (an empty prompt, chosen or rejected, chosen equal to "
        "rejected, a duplicate row, a prompt over train.max_prompt_tokens); they are dropped, "
        "each reason in a progress line, and more refuse the data (docs/design.md §3.3)")
    scorer: Scorer | None = Field(
        None, description="world: hf: the score that tilts and labels the pairs (pg with "
        "chosen: tilted, powerlaw) and the data_* statistics; default eval.scorer, which then "
        "both builds the data and judges the policies (a warning; docs/design.md §6.2)")


class SamplerSettings(Strict):
    """The sampler actors that draw pi_ref's responses for the regimes and evaluate policies."""

    backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM when it is installed, else transformers")
    actors: Int = count(1, 256, "sampler actors in the pool")
    cpus_per_actor: Float = amount(1.0, 1024, "CPUs each actor reserves")
    gpus_per_actor: Float = amount(0.0, 16, "GPUs each actor reserves", zero=True)
    temperature: Scale = Field(
        1.0, description=f"sampling temperature of pi_ref draws, {SCALE_RANGE}")
    max_tokens: Int = count(
        64, 32_768, "world: hf: longest sampled response (toy: its response length)")


class Train(Strict):
    """The DPO loop run by each trial's Ray Train workers."""

    lr: Positive = Field(1e-3, le=10, description="learning rate, in (0, 10]")
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
    objective: Literal["sampled", "population"] = Field(
        "sampled", description="sampled: the loss over batches of the regime's sampled pairs; "
        "population: its expectation under the regime's exact pair law over every enumerated "
        "response (world: toy, tilted regimes, one worker; docs/design.md §1.11)")
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
    def _rules(self) -> Train:
        if problem := first_problem(TRAIN_RULES, self):
            raise ValueError(problem)
        return self

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or self.report_every


class Scaling(Strict):
    """Ray resources for each trial and the whole sweep."""

    workers_per_trial: Int = count(1, 1024, "Ray Train workers (DDP ranks)")
    cpus_per_worker: Float = amount(1.0, 1024, "CPUs per worker")
    gpus_per_worker: Float = amount(0.0, 16, "GPUs per worker (0: CPU, gloo)", zero=True)
    max_concurrent_trials: Int = count(1, 1024, "trials running at once")


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
    acceptable answers of an open prompt; it changes no data and no pi_ref. It can decide the
    instruction verdict's sign, so the sweep file's w is the pre-registered one the verdict is
    read at, and `didray analyze` shows the verdict at every other w too (docs/design.md §3.6).
    """

    diversity_weight: Float = Field(
        0.5, ge=0, le=1, description="w, the weight of coverage in instruction_score, 0 to 1; "
        "the pre-registered weight the instruction verdict is read at (chosen before the run; "
        "didray analyze also shows every other w)")
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
    split: str | None = Field(
        None, description="world: hf, required: the split of data.source (with data.config "
        "and data.revision) whose prompts evaluate the policies, e.g. test_prefs; a prompt "
        "that is also a training prompt is refused (docs/design.md §6.2). A single "
        ".jsonl/.json/.parquet file is one split whatever it is called: put the prompts in a "
        "directory as train.jsonl and test.jsonl")
    prompts: IntOrNone = count(
        None, 100_000, "world: hf: evaluate on the first N prompts of eval.split (default: "
        "all)")
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




class SweepSearch(Search):
    """The search over this file's settings: train.* and eval.* (data.* keys are named as
    prepared once for all trials)."""

    sections: ClassVar[dict[str, type[BaseModel]]] = {"train": Train, "eval": Eval,
                                                       "data": Data}



# What didray keeps under a storage beside the sweeps' directories (didray.sweep.prepare.Store).
RESERVED_NAMES = ("cache",)
# A directory name (at most 255 bytes) with room for what is named after it: `.tmp-<name>-*`
# while it is written whole, Ray job ids.
NAME_MAX = 128


class Sweep(Strict):
    """A whole sweep file."""

    name: str = Field(
        pattern=NAME_PATTERN, max_length=NAME_MAX, description="results go to "
        f"<storage>/<name>/; at most {NAME_MAX} characters, not {' or '.join(RESERVED_NAMES)}")
    world: Literal["toy", "hf"] = Field("toy", description="where policies live")
    storage: Annotated[str, BeforeValidator(check_location)] = Field(
        "results", description="results root: a local directory, or a URI pyarrow opens "
        "(s3://, gs://, abfs://, hdfs://; docs/design.md §3.5)")
    model: Model = Field(default_factory=Model, description="the policy / pi_ref")
    data: Data = Field(default_factory=Data, description="preference data")
    regimes: list[Regime] = Field(min_length=1, description="DID-entropy regimes of the data")
    train: Train = Field(default_factory=Train, description="DPO loop")
    search: SweepSearch = Field(description="swept axes")
    scaling: Scaling = Field(default_factory=Scaling, description="Ray resources")
    eval: Eval = Field(default_factory=Eval, description="evaluation")
    sampler: SamplerSettings = Field(default_factory=SamplerSettings,
                                     description="sampler actors")
    tracking: Tracking = Field(default_factory=Tracking,
                               description="experiment trackers (MLflow, W&B)")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name.lower() in RESERVED_NAMES:  # lower: macOS and Windows fold case
            raise ValueError(f"`{name}` is reserved: <storage>/{name}/ is the store the sweeps "
                             "under a storage share; choose another name")
        return name

    @model_validator(mode="after")
    def _rules(self) -> Sweep:
        if problem := first_problem(SWEEP_RULES, self):
            raise ValueError(problem)
        if errors := point_errors(self):
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def trial_count(self) -> int:
        s = self.search
        if s.mode == "random":
            return s.num_samples
        return math.prod([len(s.beta), len(self.regime_names()), len(s.seed),
                          *map(len, s.axes.values())])  # grid mode: lists only

    def regime_names(self) -> list[str]:
        return list(self.search.regime or [r.name for r in self.regimes])

    def datasets(self) -> list[tuple[str, int | None]]:
        """(regime name, data seed) of every dataset prepare builds: each regime once, or once
        per value of a data.seed axis (None: no axis, the file's data.seed)."""
        seeds = self.search.data_seeds() or [None]
        return [(name, seed) for name in self.regime_names() for seed in seeds]

    def regime(self, name: str) -> OffPolicy | PolicyGradientPairs | PowerLaw:
        return next(r for r in self.regimes if r.name == name)

    def tilted_regimes(self) -> list[str]:
        """The swept regimes whose pairs a score tilts (powerlaw, pg with chosen: tilted)."""
        return [n for n in self.regime_names()
                if isinstance(regime := self.regime(n), Tilted) and regime.needs_tilt()]
