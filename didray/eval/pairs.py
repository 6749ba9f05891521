"""Metrics of a policy over its regime's whole dataset, from the pairs' log-probs (any world)."""

from __future__ import annotations

from torch import Tensor

from didray.core.dpo import dpo_loss


def dataset_step_metrics(policy: Tensor, ref: Tensor, beta: float, loss_type: str,
                         sizes: Tensor | None = None, label_smoothing: float = 0.0,
                         simpo_gamma: float = 0.0) -> dict[str, float]:
    """The step metrics a training report carries (loss, rewards/*, logps/*), over a whole
    regime dataset instead of one batch.

    policy, ref: (2N,) log-probs of the pairs under the policy and pi_ref, chosen rows first;
    sizes: (2N,) response token counts, which simpo needs; the rest as in the trained loss.
    """
    (pc, pr), (rc, rr) = policy.double().chunk(2), ref.double().chunk(2)
    lc, lr = sizes.chunk(2) if sizes is not None else (None, None)
    losses, metrics = dpo_loss(pc, pr, rc, rr, beta, loss_type, chosen_lengths=lc,
                               rejected_lengths=lr, gamma=simpo_gamma,
                               label_smoothing=label_smoothing)
    return {"loss": float(losses.mean()), **{k: float(v) for k, v in metrics.items()}}


def pair_metrics(policy: Tensor, ref: Tensor, beta: float, loss_type: str,
                 sizes: Tensor | None = None, label_smoothing: float = 0.0,
                 simpo_gamma: float = 0.0) -> dict[str, float]:
    """Over a whole regime dataset: the mean log-likelihood change of its chosen and rejected
    responses (docs/design.md §1.6) and the trained objective (log 2 at pi_ref for sigmoid);
    arguments as `dataset_step_metrics`'."""
    (pc, pr), (rc, rr) = policy.double().chunk(2), ref.double().chunk(2)
    step = dataset_step_metrics(policy, ref, beta, loss_type, sizes, label_smoothing,
                                simpo_gamma)
    return {"chosen_displacement": float((pc - rc).mean()),
            "rejected_displacement": float((pr - rr).mean()),
            "dpo_loss": step["loss"],
            "reward_accuracy": step["rewards/accuracies"]}
