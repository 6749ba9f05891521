"""Tests for didray.core.logprobs: hand-derived values and agreement with a naive reference."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from didray.core.logprobs import sequence_logps, token_logps


def test_token_logps_hand_value() -> None:
    # logits [0, log 3] -> p(token 1) = 3/4 at every position.
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).expand(1, 4, 2)  # (1, 4, 2)
    labels = torch.ones(1, 4, dtype=torch.long)  # (1, 4)
    out = token_logps(logits, labels)  # (1, 3)
    assert out.shape == (1, 3)
    torch.testing.assert_close(out, torch.full((1, 3), -0.2876820724517809, dtype=torch.float64))


def test_token_logps_gradient_hand_value() -> None:
    # d log p(1) / d logits = onehot(1) - softmax = [0, 1] - [1/4, 3/4] at every position with a
    # next token; the last position predicts nothing and gets no gradient.
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).repeat(1, 3, 1)  # (1, 3, 2)
    logits.requires_grad_(True)
    token_logps(logits, torch.ones(1, 3, dtype=torch.long)).sum().backward()
    expected = torch.tensor([[[-0.25, 0.25], [-0.25, 0.25], [0.0, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(logits.grad, expected, atol=1e-15, rtol=0)


def test_sequence_logps_hand_value() -> None:
    logits = torch.zeros(1, 3, 2, dtype=torch.float64)  # (1, 3, 2)
    labels = torch.tensor([[0, 1, 0]])  # (1, 3)
    loss_mask = torch.tensor([[0, 1, 1]])  # (1, 3)
    total, per_token = sequence_logps(logits, labels, loss_mask)  # (1,), (1, 2)
    assert total.item() == -1.3862943611198906
    torch.testing.assert_close(per_token, torch.full((1, 2), -math.log(2.0), dtype=torch.float64))


def test_shift_uses_previous_position() -> None:
    # Only position 0 favours token 1, so only label position 1 gets the high log-prob.
    logits = torch.zeros(1, 3, 2, dtype=torch.float64)  # (1, 3, 2)
    logits[0, 0, 1] = 10.0
    labels = torch.tensor([[0, 1, 1]])  # (1, 3)
    out = token_logps(logits, labels)  # (1, 2)
    assert out[0, 0].item() > -1e-4
    assert out[0, 1].item() == -math.log(2.0)


def test_masked_positions_are_zero_and_get_no_gradient() -> None:
    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)  # (2, 5, 7)
    labels = torch.randint(7, (2, 5), generator=torch.Generator().manual_seed(0))  # (2, 5)
    loss_mask = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.bool)  # (2, 5)
    total, per_token = sequence_logps(logits, labels, loss_mask)  # (2,), (2, 4)
    assert (per_token[~loss_mask[:, 1:]] == 0).all()
    total.sum().backward()
    # Logits at position t feed label t+1; positions whose next label is masked get no gradient.
    assert logits.grad is not None
    assert (logits.grad[0, :2] == 0).all() and (logits.grad[1, 3:] == 0).all()


def test_stable_for_huge_logits_and_low_precision() -> None:
    logits = torch.tensor([[[1e4, -1e4], [1e4, -1e4]]], dtype=torch.bfloat16)  # (1, 2, 2)
    labels = torch.tensor([[0, 1]])  # (1, 2)
    out = token_logps(logits, labels)  # (1, 1)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.item() < -1e4


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    t=st.integers(2, 6),
    v=st.integers(2, 9),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_naive_softmax(b: int, t: int, v: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64) * 5  # (B, T, V)
    labels = torch.randint(v, (b, t), generator=g)  # (B, T)
    loss_mask = torch.randint(2, (b, t), generator=g)  # (B, T)
    total, per_token = sequence_logps(logits, labels, loss_mask)  # (B,), (B, T-1)
    for i in range(b):
        expected = 0.0
        for j in range(t - 1):
            probs = logits[i, j].exp() / logits[i, j].exp().sum()  # (V,)
            lp = math.log(probs[labels[i, j + 1]].item())
            want = lp if loss_mask[i, j + 1] else 0.0
            assert math.isclose(per_token[i, j].item(), want, abs_tol=1e-10)
            expected += want
        assert math.isclose(total[i].item(), expected, abs_tol=1e-9)
