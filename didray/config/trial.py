"""What a trial runs with, typed: built once by the driver from the sweep and the prepared
files, handed to every trial with `tune.with_parameters` (Tune's `param_space` holds only the
search axes) and from the trial to its Train workers and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from didray.config.schema import Eval, SamplerSettings, Scaling, Train


def threads_for(cpus: float) -> int:
    """Torch threads for a process that reserved `cpus` CPUs: never more than it holds."""
    return max(1, int(cpus))


@dataclass(frozen=True)
class RegimeFiles:
    data_dir: Path  # the datasets.Dataset (TRL columns + metadata)
    ref_file: Path  # pair tensors and reference log-probs, shared by the regime's trials


@dataclass(frozen=True)
class TrialSpec:
    """Everything the trials of one sweep share."""

    sweep: str
    world: Literal["toy", "hf"]
    train: Train
    eval: Eval
    sampler: SamplerSettings
    scaling: Scaling
    dtype: str
    gradient_checkpointing: bool
    sweep_dir: Path
    world_dir: Path
    regimes: dict[str, RegimeFiles]
    enum_file: Path | None = None  # toy: pi_ref's log-prob of every (prompt, response)
    eval_file: Path | None = None  # hf: pi_ref's evaluation samples and scores

    @property
    def threads(self) -> int:
        return threads_for(self.scaling.cpus_per_worker)

    def evaluates_at(self, step: int) -> bool:
        """Whether the exact toy evaluation runs at this report step: at every eval.every-th
        report (only with eval.exact) and always at the last step, whose table the final
        evaluation reuses."""
        if step == self.train.steps:
            return True
        return self.eval.exact and step % (self.train.report_every * self.eval.every) == 0


@dataclass(frozen=True)
class Trial:
    """One search point of a sweep: its axes, its Tune trial id and the shared spec."""

    spec: TrialSpec
    beta: float
    regime: str
    seed: int
    trial_id: str

    @property
    def files(self) -> RegimeFiles:
        return self.spec.regimes[self.regime]

    @property
    def tags(self) -> dict[str, object]:
        """What the dashboard's gauges are tagged with."""
        return {"sweep": self.spec.sweep, "trial": self.trial_id, "beta": self.beta,
                "regime": self.regime}
