"""`theory_report`: the paper's claims checked exactly on tabular instances (docs/design.md §1.10).

The instances are a grid: `instances` random draws of pi_ref and a score, each tilted at every
tau of `taus`, so the DID entropy of pi_star spans low (1.4-2.3 nats at N = 50) to near log N
while nothing else changes. A row is one claim under one condition. Its `kind` is `claim` (a
rule that the values could break) or `reported` (an identity or a description: shown, never
counted). A claim's `status` is `holds`, `fails` or `unresolved` (float64 cannot decide it on
some instance, e.g. a loss too flat to tell the fit from the target; see `reach_status`), and
`instances` counts each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import torch

from didray.theory.checks import check_instance, pooled_claims
from didray.theory.claims import Run
from didray.threads import torch_threads
from didray.worlds.tabular import random_instance, retilt

TAUS = (0.05, 0.15, 0.5, 2.0)  # at N = 50: DID entropy of pi_star from 1.4-2.3 nats to ~log N
STEPS = 1000  # gradient steps of the finite-step dynamics, at lr = 1 / beta^2 (§1.10)


@dataclass
class TheoryReport:
    claims: pl.DataFrame  # one row per claim
    fits: pl.DataFrame  # one row per (instance, fit): convergence diagnostics
    dynamics: pl.DataFrame  # one row per (instance, case, step) of the finite-step dynamics


def theory_report(
    outcomes: int = 50, beta: float = 0.5, seed: int = 0, instances: int = 2,
    taus: tuple[float, ...] = TAUS, steps: int = STEPS,
    progress: Callable[[str], None] | None = None,
) -> TheoryReport:
    """Check the claims on `instances` draws with N=`outcomes`, each at every tau of `taus`."""
    if outcomes < 2:
        raise ValueError(f"outcomes must be >= 2 (got {outcomes})")
    if beta <= 0 or min(taus) <= 0:
        raise ValueError(f"beta and tau must be > 0 (got beta={beta}, taus={taus})")
    if instances < 1 or steps < 1:
        raise ValueError(f"instances and steps must be >= 1 (got {instances}, {steps})")
    run, start, total = Run(beta, steps, taus), time.perf_counter(), instances * len(taus)
    # The tensors here have at most N*N entries: extra threads only add contention (a fit
    # ran ~10x slower with 2 threads than with 1 on a loaded 2-core machine).
    with torch_threads(1):
        generator = torch.Generator().manual_seed(seed)
        for draw in range(instances):
            base = random_instance(outcomes, taus[0], generator)
            for k, tau in enumerate(taus):
                if progress:
                    progress(f"instance {draw * len(taus) + k + 1}/{total}: draw {draw}, "
                             f"tau {tau:g} ({time.perf_counter() - start:.0f} s)")
                check_instance(retilt(base, tau), draw, generator, run)
        pooled_claims(run)
    return TheoryReport(pl.DataFrame([c.row() for c in run.claims.values()]),
                        pl.DataFrame(run.fits), pl.concat(run.dynamics))

