"""Preference-optimisation losses on sequence log-probs: DPO (sigmoid), IPO and SimPO.

Tensors in, ``(per_example_losses, metrics)`` out, by `dpo_loss` or by a `PreferenceLoss` that
holds the settings; metrics are detached batch means named as in
TRL so dashboards line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOSS_TYPES = ("sigmoid", "ipo", "simpo")


def _check_args(beta: float, loss_type: str, label_smoothing: float) -> None:
    """Reject settings that would silently train something else."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing!r}")
    if loss_type == "ipo" and label_smoothing != 0.0:
        raise ValueError(f"label_smoothing={label_smoothing!r} is not defined for loss_type 'ipo'")


def _smoothed_logsigmoid_loss(logits: Tensor, label_smoothing: float) -> Tensor:
    """Conservative-DPO loss: the label is flipped with probability ``label_smoothing``."""
    pos = F.logsigmoid(logits)  # (B,)
    if label_smoothing == 0.0:  # plain DPO: the flipped term, weighted 0, would only cost ops
        return -pos  # (B,) the same values and gradients as the general form
    neg = F.logsigmoid(-logits)  # (B,)
    return -(1.0 - label_smoothing) * pos - label_smoothing * neg  # (B,)


def _metrics(
    chosen_rewards: Tensor, rejected_rewards: Tensor, chosen_logps: Tensor, rejected_logps: Tensor
) -> dict[str, Tensor]:
    """Detached batch means; detaching keeps logging from holding the autograd graph alive."""
    c, r = chosen_rewards.detach(), rejected_rewards.detach()  # (B,), (B,)
    return {  # every value is a () scalar
        "rewards/chosen": c.mean(),
        "rewards/rejected": r.mean(),
        "rewards/margins": (c - r).mean(),
        "rewards/accuracies": (c > r).to(c.dtype).mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
    }


def _simpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    beta: float,
    chosen_lengths: Tensor | None,
    rejected_lengths: Tensor | None,
    gamma: float,
    label_smoothing: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """SimPO: reference-free, length-normalised reward with a target margin ``gamma``."""
    if chosen_lengths is None:
        raise ValueError("loss_type 'simpo' requires chosen_lengths")
    if rejected_lengths is None:
        raise ValueError("loss_type 'simpo' requires rejected_lengths")
    # An empty response has logp 0; clamping its length to 1 keeps the reward 0 instead of NaN.
    len_c = chosen_lengths.to(policy_chosen_logps.dtype).clamp_min(1.0)  # (B,)
    len_r = rejected_lengths.to(policy_rejected_logps.dtype).clamp_min(1.0)  # (B,)
    chosen_rewards = beta * policy_chosen_logps / len_c  # (B,)
    rejected_rewards = beta * policy_rejected_logps / len_r  # (B,)
    logits = chosen_rewards - rejected_rewards - gamma  # (B,)
    return _smoothed_logsigmoid_loss(logits, label_smoothing), chosen_rewards, rejected_rewards


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None,
    ref_rejected_logps: Tensor | None,
    beta: float,
    loss_type: str = "sigmoid",
    *,
    reference_free: bool = False,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
    gamma: float = 0.0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-example preference losses (B,) and detached metrics.

    With ``h = (pc - rc) - (pr - rr)`` (ref terms 0 when ``reference_free``):
    sigmoid: ``-(1-ls) logsigmoid(beta h) - ls logsigmoid(-beta h)``; ipo: ``(h - 1/(2 beta))^2``;
    simpo: ``-logsigmoid(beta pc/Lc - beta pr/Lr - gamma)`` (reference logps are ignored and may
    be None; label smoothing is applied as for sigmoid, as TRL does).

    Examples: sigmoid with beta=log 3, h=1 gives ``log(4/3) = 0.28768207245178085``; at h=0 it
    gives ``log 2``; ipo with beta=0.25, h=1 gives ``(1-2)^2 = 1``; simpo with beta=2,
    pc=-2, Lc=2, pr=-6, Lr=3, gamma=1 gives ``log(1+e^-1) = 0.31326168751822286``.
    """
    _check_args(beta, loss_type, label_smoothing)
    if loss_type == "simpo":
        losses, chosen_rewards, rejected_rewards = _simpo(
            policy_chosen_logps,
            policy_rejected_logps,
            beta,
            chosen_lengths,
            rejected_lengths,
            gamma,
            label_smoothing,
        )
    else:
        ref_c, ref_r = _reference_terms(ref_chosen_logps, ref_rejected_logps, reference_free)
        chosen_logratio = policy_chosen_logps - ref_c  # (B,)
        rejected_logratio = policy_rejected_logps - ref_r  # (B,)
        h = chosen_logratio - rejected_logratio  # (B,)
        if loss_type == "sigmoid":
            losses = _smoothed_logsigmoid_loss(beta * h, label_smoothing)  # (B,)
        else:
            losses = (h - 1.0 / (2.0 * beta)) ** 2  # (B,)
        chosen_rewards = beta * chosen_logratio  # (B,)
        rejected_rewards = beta * rejected_logratio  # (B,)
    metrics = _metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps)
    return losses, metrics


def _reference_terms(
    ref_chosen_logps: Tensor | None, ref_rejected_logps: Tensor | None, reference_free: bool
) -> tuple[Tensor | float, Tensor | float]:
    """Reference log-probs, or 0 for reference-free training (the reference is uniform)."""
    if reference_free:
        return 0.0, 0.0
    if ref_chosen_logps is None or ref_rejected_logps is None:
        raise ValueError(
            "ref_chosen_logps and ref_rejected_logps are required unless reference_free"
        )
    return ref_chosen_logps, ref_rejected_logps


@dataclass(frozen=True)
class PreferenceLoss:
    """The trained objective's settings, held and checked once as torchtune's
    ``DPOLoss(beta, label_smoothing)`` does, then applied to every batch's log-probs."""

    beta: float
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.0  # simpo's target reward margin

    def __post_init__(self) -> None:
        _check_args(self.beta, self.loss_type, self.label_smoothing)

    def __call__(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        ref_chosen_logps: Tensor | None,
        ref_rejected_logps: Tensor | None,
        chosen_lengths: Tensor | None = None,
        rejected_lengths: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-example losses (B,) and detached metrics, as `dpo_loss` with these settings."""
        return dpo_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            self.beta,
            self.loss_type,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            gamma=self.simpo_gamma,
            label_smoothing=self.label_smoothing,
        )


def pair_law(logp_w: Tensor, logp_l: Tensor) -> Tensor:
    """``law[..., i, j]``: the probability that a pair reads "i chosen, j rejected" when
    ``y_w ~ pi_w``, ``y_l ~ pi_l`` and the order is kept with ``sigma(R_w - R_l)``,
    ``R = log pi_w - log pi_l`` (docs/design.md §1.2): (..., N) twice -> (..., N, N).

    The draw (i, j) kept and the draw (j, i) swapped both end as "i over j"; the sum equals
    ``pi_w(i) pi_l(j)`` (§1.10 (a)), computed the long way so a wrong sampler shows.
    Example (N=2): pi_w = pi_l = [1/2, 1/2] -> every entry 1/4.
    """
    draw = (logp_w.unsqueeze(-1) + logp_l.unsqueeze(-2)).exp()  # (..., N, N) [i, j]: w=i, l=j
    reward = logp_w - logp_l  # (..., N)
    keep = torch.sigmoid(reward.unsqueeze(-1) - reward.unsqueeze(-2))  # (..., N, N)
    return draw * keep + (draw * (1 - keep)).transpose(-1, -2)  # (..., N, N)


def population_loss(logp: Tensor, logp_ref: Tensor, law: Tensor, loss: PreferenceLoss
                    ) -> Tensor:
    """The expected pair loss of the policy ``logp`` under the pair law ``law`` (docs/design.md
    §1.11): ``sum_{i,j} law[i, j] loss(i over j)`` per prompt, mean over prompts.

    logp, logp_ref: (..., N) normalised; law: (..., N, N) from `pair_law`. Every ordered pair
    is evaluated, N^2 per prompt. Example: at logp = logp_ref every margin is 0, so the
    sigmoid loss is log 2 whatever the law.
    """
    n = logp.shape[-1]
    shape = (*logp.shape, n)  # (..., N, N)
    chosen, rejected = logp.unsqueeze(-1).expand(shape), logp.unsqueeze(-2).expand(shape)
    ref_c, ref_r = logp_ref.unsqueeze(-1).expand(shape), logp_ref.unsqueeze(-2).expand(shape)
    losses, _ = loss(chosen.reshape(-1), rejected.reshape(-1), ref_c.reshape(-1),
                     ref_r.reshape(-1))  # (... * N * N,)
    return (law * losses.view(shape)).sum(dim=(-2, -1)).mean()  # ()
