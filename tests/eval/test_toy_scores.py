"""The toy world's held-out scores: hand-derived tables, and a verdict the construction does not
fix (docs/design.md §6.1, §7.2)."""

from __future__ import annotations

import math

import pytest
import torch

from didray.config.schema import Judge
from didray.eval.toy import PromptTables, coverage, evaluate_tables, prompt_tables
from didray.worlds import toy

T = torch.tensor


def test_coverage_hand_values() -> None:
    p = T([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    accepted = T([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    # k = 2: each response is drawn at least once with 1 - (1 - p)^2 = .75, .4375, .4375, 0;
    # the acceptable ones sum to 1.1875 distinct, out of min(2, 3 acceptable) = 2.
    assert float(coverage(p, accepted, 2)) == pytest.approx(1.1875 / 2)
    assert float(coverage(p, accepted, 1)) == pytest.approx(0.75)  # k = 1: the mass p(A)
    point = T([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert float(coverage(point, accepted, 8)) == pytest.approx(1 / 3)  # 1 of 3, however many draws


def test_evaluate_tables_hand_values() -> None:
    """Rows: training open, training fact, held-out open, held-out facts (known, unknown)."""
    p = T([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.5, 0.25, 0.25], [0.6, 0.4, 0.0],
           [0.6, 0.4, 0.0]], dtype=torch.float64)
    ref = p.clone()
    ref[2:] = T([0.0, 0.0, 1.0])  # held out: pi_ref always answers unacceptably
    accepted = T([[1, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    tables = PromptTables(
        scores=torch.zeros(5, 3, dtype=torch.float64),  # the data reward plays no part
        accepted=accepted,
        is_fact=T([False, True, False, True, True]),
        heldout=T([False, False, True, True, True]),
        known=T([False, False, False, True, False]),
        teachable=T([False, True, False, False, True]))
    out = evaluate_tables(p.log(), ref.log(), tables, Judge(diversity_weight=0.5, k=2))
    # DID entropy over the training rows only, where policy = pi_ref: log 3 each.
    for name in ("did_entropy", "did_entropy_open", "did_entropy_fact"):
        assert out[name] == pytest.approx(math.log(3))
    # held-out open: judge .75; coverage (.75 + .4375) / 2; score = .5 judge + .5 coverage
    assert out["instruction_judge"] == pytest.approx(0.75)
    assert out["instruction_coverage"] == pytest.approx(0.59375)
    assert out["instruction_score"] == pytest.approx(0.671875)
    assert out["instruction_winrate"] == pytest.approx(0.75 + 0.25 / 2)  # ties count half
    # training open: judge .9; coverage (.84 + .51) / 2 = .675
    assert out["instruction_score_seen"] == pytest.approx(0.5 * 0.9 + 0.5 * 0.675)
    assert (out["qa_accuracy"], out["qa_accuracy_known"], out["qa_accuracy_unknown"]) == (
        0.5, 1.0, 0.0)
    # the known fact is the unteachable one here, so the other split reads the other way
    assert (out["qa_accuracy_teachable"], out["qa_accuracy_unteachable"]) == (0.0, 1.0)
    assert out["qa_expected"] == pytest.approx((0.6 + 0.4) / 2)
    assert out["qa_accuracy_seen"] == 1.0


def test_winrate_is_derived_from_the_judge() -> None:
    """A 0/1 judge makes the win rate 1/2 + (p(A) - q(A)) / 2, whatever else p and q are:
    p(A) = .75, q(A) = .5; wins .75 x .5 = .375, ties .75 x .5 + .25 x .5 = .5, so .625 =
    .5 + .25 / 2. Hence no verdict row of its own (docs/design.md §6.1)."""
    p = T([[0.5, 0.25, 0.25]], dtype=torch.float64)
    ref = T([[0.2, 0.3, 0.5]], dtype=torch.float64)
    tables = PromptTables(scores=torch.zeros(1, 3, dtype=torch.float64),
                          accepted=T([[1.0, 1.0, 0.0]], dtype=torch.float64), is_fact=T([False]),
                          heldout=T([True]), known=T([False]), teachable=T([False]))
    out = evaluate_tables(p.log(), ref.log(), tables, Judge())
    assert out["instruction_winrate"] == pytest.approx(0.625)
    assert out["instruction_winrate"] == pytest.approx(0.5 + (out["instruction_judge"] - 0.5) / 2)


def test_did_entropy_away_from_pi_ref_hand_values() -> None:
    """The evaluation's DID entropy at a policy pi != pi_ref is H(q), q ∝ pi / pi_ref
    (docs/design.md §1), not its reverse pi_ref / pi, whose entropy differs here.

    Open row: pi = [2/7, 1/7, 4/7], pi_ref = [1/2, 1/4, 1/4] -> pi / pi_ref ∝ [1, 1, 4] ->
    q = [1/6, 1/6, 2/3] -> H = (1/3) log 6 + (2/3) log(3/2) = 0.8676 (the reverse ratio gives
    q = [4/9, 4/9, 1/9], H = 0.9650). Fact row: pi uniform, same pi_ref -> pi / pi_ref ∝
    [1, 2, 2] -> q = [1/5, 2/5, 2/5] -> H = (1/5) log 5 + (4/5) log(5/2) = 1.0549 (reverse:
    q = [1/2, 1/4, 1/4], H = (3/2) log 2 = 1.0397)."""
    p = T([[2 / 7, 1 / 7, 4 / 7], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    ref = T([[1 / 2, 1 / 4, 1 / 4], [1 / 2, 1 / 4, 1 / 4]], dtype=torch.float64)
    tables = PromptTables(scores=torch.zeros(2, 3, dtype=torch.float64),
                          accepted=torch.zeros(2, 3, dtype=torch.float64),
                          is_fact=T([False, True]), heldout=T([False, False]),
                          known=T([False, False]), teachable=T([False, False]))
    out = evaluate_tables(p.log(), ref.log(), tables, Judge())
    open_h = math.log(6) / 3 + 2 / 3 * math.log(3 / 2)
    fact_h = math.log(5) / 5 + 4 / 5 * math.log(5 / 2)
    assert out["did_entropy_open"] == pytest.approx(open_h, abs=1e-12)
    assert out["did_entropy_fact"] == pytest.approx(fact_h, abs=1e-12)
    assert out["did_entropy"] == pytest.approx((open_h + fact_h) / 2, abs=1e-12)


def test_qa_split_on_the_experiment_world() -> None:
    """sweeps/did-claims.yaml's world with a policy that answers every fact as the SFT teacher
    does (the answer if known, else its belief; 0.9 of the mass): known held-out facts are
    eno, dari, lumo, pavo, hamo (5 of 8); teachable ones (tests/worlds/test_toy.py) eno, dari,
    lumo, fari, pavo, mira, of which the first four are known: 4 of 6 teachable, and of the
    unteachable alba (unknown) and hamo (known), 1 of 2."""
    world = toy.build_world(toy.ToyWorldSpec(seed=0, n_open_prompts=8, n_fact_prompts=8))
    tables = prompt_tables(world)
    responses = toy.enumerate_responses(world)
    p = torch.full((len(world.all_prompts), len(responses)), 0.1 / (len(responses) - 1),
                   dtype=torch.float64)
    for i, prompt in enumerate(world.all_prompts):
        guess = prompt.answer if prompt.teacher_knows else prompt.teacher_belief
        p[i, responses.index(guess or responses[0])] = 0.9  # open prompts: any one response
    out = evaluate_tables(p.log(), p.log(), tables, Judge())
    assert int(tables.teachable[tables.heldout & tables.is_fact].sum()) == 6
    assert (out["qa_accuracy"], out["qa_accuracy_known"], out["qa_accuracy_unknown"]) == (
        5 / 8, 1.0, 0.0)
    assert (out["qa_accuracy_teachable"], out["qa_accuracy_unteachable"]) == (4 / 6, 1 / 2)


# A world small enough to fit in seconds: 6 words, responses of 1-2 words (42 in all).
SPEC = toy.ToyWorldSpec(n_open_prompts=4, n_fact_prompts=4, n_heldout_open_prompts=6,
                        n_heldout_fact_prompts=4, response_alphabet=6, max_response_tokens=2,
                        fact_known_rate=0.5, sft_steps=300)
TAUS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def spearman(x: list[float], y: list[float]) -> float:
    rank = lambda v: T(v).argsort().argsort().double()  # noqa: E731 (no ties here)
    rx, ry = rank(x), rank(y)
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


@pytest.fixture(scope="module")
def optimum_family(tmp_path_factory):
    """DID entropy and scores along pi_tau ∝ pi_ref exp(open_score / tau), the DPO optimum of
    data tilted by the data reward (§1.7), for the diversity weights 0 and 1 (k = 32). Held-out
    rows get the same tilt: the policy is assumed to transfer what it learned exactly."""
    world, model, tokenizer = toy.load_world(toy.fit_reference(SPEC, tmp_path_factory.mktemp("t")))
    ref = torch.log_softmax(toy.enumerate_logps(model, tokenizer, world).double(), -1)
    tables = prompt_tables(world)
    rows = []
    for tau in TAUS:
        logp = torch.log_softmax(ref + tables.scores / tau, -1)
        rows.append({w: evaluate_tables(logp, ref, tables, Judge(diversity_weight=w, k=32))
                     for w in (0.0, 1.0)})
    return rows


def test_the_verdict_is_not_fixed_by_construction(optimum_family) -> None:
    """Same data, same pi_ref, same policies: the judge's diversity weight alone flips the
    sign of the entropy-instruction correlation.

    Measured (tau 0.02 -> 1): DID entropy 0.72 -> 3.71 nats; w = 0: instruction_score
    1.000 -> 0.786 (Spearman -1); w = 1: 0.487 -> 0.707 (Spearman +1; pi_ref itself: 0.709,
    so here coverage only ever loses to concentration, more slowly at high entropy).
    """
    entropy = [row[0.0]["did_entropy"] for row in optimum_family]
    assert entropy == sorted(entropy)  # dH/dtau >= 0 (§1.7)
    acceptable = [row[0.0]["instruction_score"] for row in optimum_family]
    covering = [row[1.0]["instruction_score"] for row in optimum_family]
    assert spearman(entropy, acceptable) == pytest.approx(-1.0)
    assert spearman(entropy, covering) == pytest.approx(1.0)
    assert acceptable[0] == pytest.approx(1.0, abs=1e-3) and covering[0] < 0.5
