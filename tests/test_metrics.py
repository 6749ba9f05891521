"""The metric registry names what every producer and reader uses."""

import torch

from didray import metrics
from didray.analysis import tables
from didray.config.schema import Judge
from didray.core.dpo import PreferenceLoss, dpo_loss
from didray.eval.pairs import pair_metrics
from didray.eval.toy import PromptTables, evaluate_tables
from didray.train.gauges import GAUGES
from didray.train.worker import EXACT_STEP_METRICS


def registered(names) -> list[str]:
    return [n for n in names if metrics.lookup(n) is None]


def test_dpo_loss_metric_names_are_registered_step_metrics():
    c = torch.tensor([-1.0, -2.0])
    _, produced = dpo_loss(c, c - 1, c, c, beta=0.1, loss_type="sigmoid")
    assert registered(produced) == []
    assert {metrics.lookup(n).tables for n in produced} == {("steps",)}


def test_exact_evaluation_names_are_registered():
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.75]] * 2, dtype=torch.float64))
    flags = torch.tensor([False, True] * 2)
    tables = PromptTables(torch.ones(4, 2, dtype=torch.float64),
                          torch.ones(4, 2, dtype=torch.float64), is_fact=flags,
                          heldout=torch.tensor([False, False, True, True]), known=flags,
                          teachable=flags)
    out = evaluate_tables(logp, logp, tables, Judge())
    pairs = pair_metrics(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.5]),
                         PreferenceLoss(0.1))
    assert registered(out) == [] and registered(pairs) == []
    assert registered(EXACT_STEP_METRICS) == []
    assert registered(EXACT_STEP_METRICS.values()) == []


def test_gauges_tables_and_progress_columns_name_registered_metrics():
    assert registered(GAUGES.values()) == []
    assert registered([*tables.SCORES, *tables.CORRELATED, *tables.CURVES]) == []
    assert registered(metrics.labels()) == []


def test_final_prefix_resolves_to_the_step_metric():
    assert metrics.lookup("final/rewards/margins") is metrics.REGISTRY["rewards/margins"]
    assert metrics.lookup("final/nope") is None and metrics.lookup("nope") is None
    # Only step metrics have a final/ copy: a trial's own columns do not.
    assert metrics.lookup("final/checkpoint_path") is None


def test_patterned_names_match_one_column_per_k():
    snis_ref = metrics.REGISTRY["did_entropy_snis_ref_k{K}"]
    assert metrics.lookup("did_entropy_snis_ref_k32") is snis_ref
    assert metrics.lookup("did_entropy_snis_ref_k8") is snis_ref
    assert metrics.lookup("did_entropy_plugin_k128").name == "did_entropy_plugin_k{K}"
    assert metrics.lookup("did_entropy_snis_ref_k8_ess").name == "did_entropy_snis_ref_k{K}_ess"
    # K is a positive integer written plainly, and the whole name must match.
    for name in ("did_entropy_snis_ref_k", "did_entropy_snis_ref_k0", "did_entropy_snis_ref_k08",
                 "did_entropy_snis_ref_k32x", "did_entropy_snis_policy",
                 "final/did_entropy_plugin_k8"):
        assert metrics.lookup(name) is None, name
    assert [m.name for m in metrics.REGISTRY.values() if m.patterned] == [
        "train.{setting}", "eval.{setting}", "did_entropy_plugin_k{K}",
        "did_entropy_snis_policy_k{K}", "did_entropy_snis_policy_k{K}_ess",
        "did_entropy_snis_policy_k{K}_reliable", "did_entropy_snis_ref_k{K}",
        "did_entropy_snis_ref_k{K}_ess", "did_entropy_snis_ref_k{K}_reliable"]


def test_columns_command_and_reference_doc_list_every_registered_column(capsys):
    from pathlib import Path

    import polars as pl

    from didray.cli import main

    assert main(["analyze", "--columns", "--format", "csv"]) == 0
    printed = pl.read_csv(capsys.readouterr().out.encode())
    assert printed["column"].to_list() == list(metrics.REGISTRY)
    assert printed.filter(pl.col("column") == "did/entropy")["worlds"].to_list() == ["toy"]
    dictionary = (Path(__file__).parents[1] / "docs" / "reference.md").read_text()
    assert [n for n in metrics.REGISTRY if f"| {n} " not in dictionary] == []


def test_figures_name_columns_with_their_axis_name_and_unit():
    assert [metrics.axis_label(c) for c in ("did_entropy", "qa_accuracy", "beta", "final/loss",
                                            "did_entropy_plugin_k32", "not_registered")] == [
        "DID entropy (nats)", "QA accuracy", "β", "DPO loss (nats)", "did_entropy_plugin_k32",
        "not_registered"]
