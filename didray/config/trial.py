"""What a trial runs with, typed: built once by the driver from the sweep and the prepared
files, handed to every trial with `tune.with_parameters` (Tune's `param_space` holds only the
search axes) and from the trial to its Train workers and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from didray.config.paths import parse, put
from didray.config.regimes import Regime
from didray.config.schema import Eval, SamplerSettings, Scaling, SweepSearch, Train
from didray.config.search import DATA_SEED
from didray.core.dpo import PreferenceLoss
from didray.storage import Storage


def dataset_key(regime: str, data_seed: int | None) -> str:
    """The name of one prepared dataset: the regime's name, and its data seed where
    `data.seed` is an axis (each value is a replicate dataset of every regime)."""
    return regime if data_seed is None else f"{regime}@data.seed={data_seed}"


def threads_for(cpus: float) -> int:
    """Torch threads for a process that reserved `cpus` CPUs: never more than it holds."""
    return max(1, int(cpus))


@dataclass(frozen=True)
class PairLaw:
    """A tilted regime's exact pair law (docs/design.md §1.11): the sampler that is pi_ref
    tilted by exp(±beta_data score / tau), the other being pi_ref, and Bradley-Terry labels."""

    tilted: Literal["chosen", "rejected"]  # pg tilts pi_w up, powerlaw tilts pi_l down
    beta_data: float
    tau: float

    @classmethod
    def of(cls, regime: Regime, tau: float | None) -> PairLaw | None:
        """The law of a regime whose data were built at `tau` (given or solved; None: the
        regime is not tilted)."""
        if tau is None:
            return None
        return cls("chosen" if regime.kind == "pg" else "rejected", regime.beta_data, tau)


@dataclass(frozen=True)
class RegimeFiles:
    data_dir: Path  # the datasets.Dataset (TRL columns + metadata)
    ref_file: Path  # pair tensors and reference log-probs, shared by the regime's trials
    law: PairLaw | None = None  # tilted regimes only: offpolicy and given pg follow no tilt


@dataclass(frozen=True)
class TrialSpec:
    """Everything the trials of one sweep share; `train` and `eval` before a trial's own
    search axes are applied (`Trial.train`, `Trial.eval` are what a trial runs with)."""

    sweep: str
    world: Literal["toy", "hf"]
    train: Train
    eval: Eval
    sampler: SamplerSettings
    scaling: Scaling
    dtype: str
    gradient_checkpointing: bool
    storage: Storage  # where sweep_dir and the caches below live (their mirror paths)
    sweep_dir: Path
    world_dir: Path
    regimes: dict[str, RegimeFiles]  # by dataset_key
    enum_file: Path | None = None  # toy: pi_ref's log-prob of every (prompt, response)
    eval_file: Path | None = None  # hf: pi_ref's evaluation samples and scores

    @property
    def threads(self) -> int:
        return threads_for(self.scaling.cpus_per_worker)

    def fetch(self, dataset: str) -> None:
        """Pull what a trial of `dataset` (a dataset_key) reads into this node's mirror of a
        remote storage (on a cluster without a shared disk the driver's node alone has them)."""
        files = (self.world_dir, self.regimes[dataset].ref_file, self.enum_file, self.eval_file)
        self.storage.ensure(*(f for f in files if f is not None))


def setting_axes(config: dict) -> dict[str, object]:
    """The train.* / eval.* search axes (and data.seed) of a Tune trial config."""
    return {k: v for k, v in config.items() if k in SweepSearch.settings()}


def with_axes(train: Train, eval: Eval, axes: dict[str, object]) -> tuple[Train, Eval]:
    """The shared settings with one trial's axis values put in. The sweep's validation held
    every search point to the rules across fields; only the values themselves are typed here,
    as a drawn one (`tune.uniform`) was never seen (a float drawn for an integer setting is
    refused)."""
    sections = {"train": train, "eval": eval}
    for key, value in axes.items():
        if key == DATA_SEED:  # picks the trial's dataset (Trial.dataset), not a setting
            continue
        sections = put(sections, parse(key), SweepSearch.field_type(key).validate_python(value))
    return sections["train"], sections["eval"]


@dataclass(frozen=True)
class Trial:
    """One search point of a sweep: its axes, its Tune trial id, the shared spec and its own
    train and eval settings (the spec's with its train.* / eval.* axes applied)."""

    spec: TrialSpec
    beta: float
    regime: str
    seed: int
    trial_id: str
    train: Train
    eval: Eval
    axes: dict[str, object] = field(default_factory=dict)  # train.*, eval.*, data.seed values

    @classmethod
    def of(cls, spec: TrialSpec, config: dict, trial_id: str) -> Trial:
        """The trial of a Tune config (`didray.sweep.space.search_space`)."""
        axes = setting_axes(config)
        train, eval = with_axes(spec.train, spec.eval, axes)
        return cls(spec, config["beta"], config["regime"], config["seed"], trial_id, train,
                   eval, axes)

    @property
    def dataset(self) -> str:
        """The dataset_key of the data it trains on."""
        return dataset_key(self.regime, self.axes.get(DATA_SEED))

    @property
    def files(self) -> RegimeFiles:
        return self.spec.regimes[self.dataset]

    @property
    def loss(self) -> PreferenceLoss:
        """The objective this trial trains and is measured by."""
        t = self.train
        return PreferenceLoss(self.beta, t.loss_type, t.label_smoothing, t.simpo_gamma)

    @property
    def tags(self) -> dict[str, object]:
        """What the dashboard's gauges are tagged with."""
        return {"sweep": self.spec.sweep, "trial": self.trial_id, "beta": self.beta,
                "regime": self.regime}

    def evaluates_at(self, step: int) -> bool:
        """Whether the exact toy evaluation runs at this report step: at every eval.every-th
        report (only with eval.exact) and always at the last step, whose table the final
        evaluation reuses."""
        if step == self.train.steps:
            return True
        return self.eval.exact and step % (self.train.report_every * self.eval.every) == 0
