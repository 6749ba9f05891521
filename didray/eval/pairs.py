"""Metrics of a policy over its regime's whole dataset, from the pairs' log-probs (any world)."""

from __future__ import annotations

from torch import Tensor

from didray.core.dpo import PreferenceLoss


def dataset_step_metrics(policy: Tensor, ref: Tensor, loss: PreferenceLoss,
                         sizes: Tensor | None = None) -> dict[str, float]:
    """The step metrics a training report carries (loss, rewards/*, logps/*), over a whole
    regime dataset instead of one batch.

    policy, ref: (2N,) log-probs of the pairs under the policy and pi_ref, chosen rows first;
    sizes: (2N,) response token counts, which simpo needs; loss: the trained one.
    """
    (pc, pr), (rc, rr) = policy.double().chunk(2), ref.double().chunk(2)
    lc, lr = sizes.chunk(2) if sizes is not None else (None, None)
    losses, metrics = loss(pc, pr, rc, rr, lc, lr)
    return {"loss": float(losses.mean()), **{k: float(v) for k, v in metrics.items()}}


def pair_metrics(policy: Tensor, ref: Tensor, loss: PreferenceLoss,
                 sizes: Tensor | None = None) -> dict[str, float]:
    """Over a whole regime dataset: the mean log-likelihood change of its chosen and rejected
    responses (docs/design.md §1.6) and the trained objective (log 2 at pi_ref for sigmoid);
    arguments as `dataset_step_metrics`'."""
    (pc, pr), (rc, rr) = policy.double().chunk(2), ref.double().chunk(2)
    step = dataset_step_metrics(policy, ref, loss, sizes)
    return {"chosen_displacement": float((pc - rc).mean()),
            "rejected_displacement": float((pr - rr).mean()),
            "dpo_loss": step["loss"],
            "reward_accuracy": step["rewards/accuracies"]}
