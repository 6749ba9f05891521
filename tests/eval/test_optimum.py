"""The population optimum of a toy cell and its pair law (docs/design.md §1.11), on a real toy
world's scores with a random pi_ref table: the closed form of §1.9 and the law's marginals."""

from __future__ import annotations

import pytest
import torch

from didray.config.schema import Judge, ToyWorldSpec
from didray.config.trial import PairLaw
from didray.core.did import tilt_entropy
from didray.eval.optimum import distance, optimum_columns, optimum_table, samplers, training_law
from didray.eval.toy import ToyTables, prompt_tables
from didray.worlds import toy

POWERLAW, PG = PairLaw("rejected", 0.5, 0.2), PairLaw("chosen", 0.5, 0.2)


@pytest.fixture(scope="module")
def tables() -> ToyTables:
    spec = ToyWorldSpec(response_alphabet=6, max_response_tokens=2, n_open_prompts=2,
                        n_fact_prompts=2, n_heldout_open_prompts=2, n_heldout_fact_prompts=2)
    world = toy.build_world(spec)
    ref = torch.randn(8, 42, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    return ToyTables(world, ref, prompt_tables(world), Judge(),
                     toy.Enumeration.of(world, toy.build_tokenizer()))


@pytest.mark.parametrize("law", [POWERLAW, PG])
def test_samplers_differ_by_the_label_reward(tables: ToyTables, law: PairLaw) -> None:
    """log pi_w - log pi_l = beta_data score / tau + c per prompt (§1.4, §5.2), and the
    untilted side is pi_ref itself."""
    ref = tables.ref.double()
    logp_w, logp_l = samplers(ref, tables.prompts.scores, law)
    gap = logp_w - logp_l - law.beta_data * tables.prompts.scores / law.tau  # (P, R)
    assert (gap - gap[:, :1]).abs().max() < 1e-12
    untilted = logp_w if law.tilted == "rejected" else logp_l
    assert torch.equal(untilted, ref)


def test_training_law_has_the_samplers_as_marginals(tables: ToyTables) -> None:
    """§1.10 (a): chosen ~ pi_w and rejected ~ pi_l, on the training prompts only."""
    law = training_law(tables, POWERLAW)  # (P_train, R, R)
    logp_w, logp_l = samplers(tables.ref.double()[:4], tables.prompts.scores[:4], POWERLAW)
    assert law.shape == (4, 42, 42)
    # pi_ref's table is normalised in float32, as the enumeration's is: sums to 1 +- 1e-7.
    torch.testing.assert_close(law.sum(-1), logp_w.exp(), rtol=0, atol=1e-7)
    torch.testing.assert_close(law.sum(-2), logp_l.exp(), rtol=0, atol=1e-7)


def test_optimum_of_a_known_tilt(tables: ToyTables) -> None:
    """At beta_t the optimum's DID is softmax(beta_data score / (tau beta_t)) (§1.9), whatever
    pi_ref is; pg's law has the same optimum; the optimum is at distance 0 from itself."""
    beta = 2.0
    optimum = optimum_table(tables, POWERLAW, beta)
    closed = tilt_entropy(tables.prompts.scores[:4], POWERLAW.tau * beta / POWERLAW.beta_data)
    columns = optimum_columns(tables, optimum)
    assert columns["optimum_did_entropy"] == pytest.approx(float(closed.mean()), abs=1e-9)
    assert columns["optimum_did_entropy_fact"] == pytest.approx(float(closed[2:].mean()),
                                                                abs=1e-9)
    torch.testing.assert_close(optimum_table(tables, PG, beta), optimum, rtol=0, atol=1e-12)
    assert distance(tables, optimum.float(), optimum) == pytest.approx(
        {"optimum_tv": 0.0, "optimum_kl": 0.0}, abs=1e-6)
    # A larger training beta moves the optimum towards pi_ref (tau_eff grows).
    far = distance(tables, tables.ref, optimum_table(tables, POWERLAW, 0.5))
    near = distance(tables, tables.ref, optimum)
    assert 0 < near["optimum_tv"] < far["optimum_tv"] and 0 < near["optimum_kl"] < far["optimum_kl"]
