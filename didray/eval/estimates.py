"""DID-entropy estimates from K samples per prompt, graded against the exact value.

In the toy world the (P, R) log-prob tables of the policy and pi_ref are exact, so samples are
drawn from them exactly and every estimate sits next to the number it estimates. The same
estimators run unchanged where only samples exist (the hf world): that is what they are for.
"""

from __future__ import annotations

import torch
from torch import Tensor

from didray.core.did import did_entropy
from didray.core.estimators import (
    EntropyEstimate,
    bootstrap_spread,
    first_occurrence_mask,
    plugin_entropy,
    snis_entropy,
)

# (estimator, proposal): the paper's plug-in over the policy's own samples, and
# self-normalised importance sampling from the policy and from pi_ref.
METHODS = (("plugin", "policy"), ("snis", "policy"), ("snis", "ref"))
# An SNIS estimate whose weights' effective sample size is below this is one sample's
# log w - l, not an average over samples: reported as unreliable (docs/design.md §1.8).
RELIABLE_ESS = 2.0


def _estimate(method: tuple[str, str], log_ratio: Tensor, proposal_logp: Tensor, ids: Tensor,
              n_boot: int, generator: torch.Generator) -> tuple[EntropyEstimate, Tensor, Tensor]:
    estimator, proposal = method
    if estimator == "plugin":
        est = plugin_entropy(log_ratio, proposal, mask=first_occurrence_mask(ids))
        low, high = bootstrap_spread(log_ratio, "plugin", mask_ids=ids, n_boot=n_boot,
                                 generator=generator)
    else:
        est = snis_entropy(log_ratio, proposal_logp, proposal)
        low, high = bootstrap_spread(log_ratio, "snis", proposal_logprobs=proposal_logp,
                                 n_boot=n_boot, generator=generator)
    return est, low, high


def method_rows(method: tuple[str, str], log_ratio: Tensor, proposal_logp: Tensor, ids: Tensor,
                n_boot: int, generator: torch.Generator, exact: Tensor | None) -> list[dict]:
    """One row per prompt for one method; log_ratio, proposal_logp, ids: (P, K); exact (P,).
    SNIS rows carry their weights' effective sample size, the plug-in's none."""
    est, low, high = _estimate(method, log_ratio, proposal_logp, ids, n_boot, generator)
    return [{"prompt_id": p, "estimator": est.estimator, "k": est.k, "proposal": est.proposal,
             "estimate": float(est.value[p]), "spread_low": float(low[p]),
             "spread_high": float(high[p]), "ess": None if est.ess is None else float(est.ess[p]),
             "exact": None if exact is None else float(exact[p])}
            for p in range(log_ratio.shape[0])]


def entropy_estimates(
    logp: Tensor, logp_ref: Tensor, k: int, n_boot: int = 200, seed: int = 0
) -> list[dict]:
    """One row per (method, prompt): estimate, bootstrap spread, exact value, estimator, K,
    proposal.

    logp, logp_ref: (P, R) normalised log-probs of the policy and pi_ref over the enumerated
    responses. Samples are drawn with replacement, as a sampler would produce them.
    """
    generator = torch.Generator().manual_seed(seed)
    exact = did_entropy(logp, logp_ref)  # (P,)
    rows = []
    for method in METHODS:
        source = logp if method[1] == "policy" else logp_ref  # (P, R)
        ids = torch.multinomial(source.exp(), k, replacement=True, generator=generator)  # (P, K)
        log_ratio = logp.gather(-1, ids) - logp_ref.gather(-1, ids)  # (P, K)
        rows += method_rows(method, log_ratio, source.gather(-1, ids), ids, n_boot, generator,
                            exact)
    return rows


def text_ids(texts: list[list[str]]) -> Tensor:
    """(P, K) ids of sampled texts, equal where the text is equal within a prompt's row."""
    return torch.tensor([[row.index(t) for t in row] for row in texts], dtype=torch.long)


def sample_estimates(samples: dict[str, tuple[list[list[str]], Tensor, Tensor]], n_boot: int,
                     seed: int = 0) -> list[dict]:
    """Estimates from real samples (no exact value): per proposal ("policy", "ref") the texts
    (P, K) and their log-probs under the policy and pi_ref, each (P, K)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for method in METHODS:
        texts, logp, logp_ref = samples[method[1]]
        proposal_logp = logp if method[1] == "policy" else logp_ref
        rows += method_rows(method, logp - logp_ref, proposal_logp, text_ids(texts), n_boot,
                            generator, None)
    return rows
