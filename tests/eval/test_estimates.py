"""DID-entropy estimates against the exact value, on tables with known DID entropy."""

import math

import pytest
import torch

from didray.eval.estimates import METHODS, entropy_estimates, sample_estimates, text_ids


def tables(p: int = 3, r: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logp_ref = torch.log_softmax(torch.randn(p, r, generator=g, dtype=torch.float64), -1)
    logp = torch.log_softmax(logp_ref + torch.randn(p, r, generator=g, dtype=torch.float64), -1)
    return logp, logp_ref


def test_identical_policies_give_uniform_did():
    # p = pi_ref: the DID is uniform over R responses, so H = log R exactly. The deduplicated
    # plug-in is exact once its samples cover all R; snis still estimates log Z by the sample
    # mean of 1/s, which only approaches log R.
    _, ref = tables(r=4)
    rows = entropy_estimates(ref, ref, k=256, n_boot=50)
    assert all(row["exact"] == pytest.approx(math.log(4)) for row in rows)
    plugin = [r["estimate"] for r in rows if r["estimator"] == "plugin"]
    snis = [r["estimate"] for r in rows if r["estimator"] == "snis"]
    assert plugin == pytest.approx([math.log(4)] * 3)
    assert snis == pytest.approx([math.log(4)] * 6, abs=0.2)


def test_rows_record_method_k_and_interval():
    logp, ref = tables()
    rows = entropy_estimates(logp, ref, k=16, n_boot=50)
    assert len(rows) == len(METHODS) * 3
    assert {(r["estimator"], r["proposal"]) for r in rows} == set(METHODS)
    assert all(r["k"] == 16 and r["spread_low"] <= r["spread_high"] for r in rows)
    # SNIS rows carry their weights' effective sample size, 1 to K; the plug-in has none.
    assert all((r["ess"] is None) == (r["estimator"] == "plugin") for r in rows)
    assert all(1 <= r["ess"] <= 16 for r in rows if r["ess"] is not None)


def test_estimates_approach_exact_as_k_grows():
    logp, ref = tables(p=20, r=12, seed=1)

    def error(k: int) -> dict:
        rows = entropy_estimates(logp, ref, k=k, n_boot=20, seed=2)
        out = {}
        for method in METHODS:
            sel = [r for r in rows if (r["estimator"], r["proposal"]) == method]
            out[method] = sum(abs(r["estimate"] - r["exact"]) for r in sel) / len(sel)
        return out

    small, large = error(4), error(2048)
    for method in METHODS:
        assert large[method] < 0.05, (method, large[method])
        assert large[method] < small[method] / 3, (method, small[method], large[method])


def test_sample_estimates_from_texts_dedup_by_text():
    # Policy = pi_ref: every log-ratio is 0, so the deduplicated plug-in is log(#distinct
    # texts) exactly, whatever the log-probs; texts alone define what counts as distinct.
    texts = [["a", "b", "a", "c"], ["x", "x", "x", "x"]]
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.5, 0.25], [1.0] * 4], dtype=torch.float64))
    rows = sample_estimates({"policy": (texts, logp, logp), "ref": (texts, logp, logp)},
                            n_boot=20)
    plugin = [r for r in rows if r["estimator"] == "plugin"]
    assert [r["estimate"] for r in plugin] == pytest.approx([math.log(3), 0.0])
    assert all(r["exact"] is None and r["k"] == 4 for r in rows)
    assert {(r["estimator"], r["proposal"]) for r in rows} == set(METHODS)
    # SNIS weights w = exp(l - log s) = 1/s: [2, 4, 2, 4] -> u = [1/6, 1/3, 1/6, 1/3],
    # ESS = 1 / (2/36 + 2/9) = 3.6; the second prompt's equal weights give K = 4.
    snis = [r["ess"] for r in rows if r["estimator"] == "snis"]
    assert snis == pytest.approx([3.6, 4.0] * 2)


def test_text_ids_mark_equal_texts_within_a_prompt():
    assert text_ids([["a", "b", "a"], ["b", "b", "c"]]).tolist() == [[0, 1, 0], [0, 0, 2]]
