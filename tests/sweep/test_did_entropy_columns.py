"""A trial's DID-entropy columns from its estimate rows: names carry method and K, SNIS carries
its weights' effective sample size, and `did_entropy` is exact where there is an exact value,
else the paper's plug-in over the policy's samples (docs/design.md §1.8, §6.3)."""

import polars as pl
import pytest

from didray import metrics
from didray.sweep.trial import did_entropy_columns, estimator_name


def rows(k: int) -> pl.DataFrame:
    """Two prompts per method; means: plugin 1.5, snis/policy 3.0, snis/ref 5.0. SNIS effective
    sample sizes: policy 1.2 and 4.0 (mean 2.6, one prompt of two reaches 2), ref 1.0 and 1.5
    (mean 1.25, none reaches 2); the plug-in has no weights."""
    return pl.DataFrame({"estimator": ["plugin"] * 2 + ["snis"] * 4,
                         "proposal": ["policy"] * 4 + ["ref"] * 2, "k": [k] * 6,
                         "estimate": [1.0, 2.0, 2.5, 3.5, 4.0, 6.0],
                         "ess": [None, None, 1.2, 4.0, 1.0, 1.5]})


SNIS = {"did_entropy_snis_policy_k{k}_ess": 2.6, "did_entropy_snis_policy_k{k}_reliable": 0.5,
        "did_entropy_snis_ref_k{k}_ess": 1.25, "did_entropy_snis_ref_k{k}_reliable": 0.0}


def snis_columns(k: int) -> dict:
    return {name.format(k=k): value for name, value in SNIS.items()}


def test_toy_did_entropy_is_the_exact_value():
    assert did_entropy_columns(rows(32), exact=6.25, k=32) == pytest.approx({
        "did_entropy_plugin_k32": 1.5, "did_entropy_snis_policy_k32": 3.0,
        "did_entropy_snis_ref_k32": 5.0, **snis_columns(32), "did_entropy_exact": 6.25,
        "did_entropy": 6.25, "did_entropy_estimator": "exact"})


def test_hf_did_entropy_is_the_plugin_with_its_k_and_snis_is_flagged():
    columns = did_entropy_columns(rows(8), exact=None, k=8)
    assert columns == pytest.approx({
        "did_entropy_plugin_k8": 1.5, "did_entropy_snis_policy_k8": 3.0,
        "did_entropy_snis_ref_k8": 5.0, **snis_columns(8), "did_entropy": 1.5,
        "did_entropy_estimator": "plugin_k8"})
    assert [c for c in columns if metrics.lookup(c) is None] == []


@pytest.mark.parametrize(("method", "name"), [(("plugin", "policy"), "plugin_k8"),
                                              (("snis", "policy"), "snis_policy_k8"),
                                              (("snis", "ref"), "snis_ref_k8")])
def test_estimator_names(method, name):
    assert estimator_name(*method, 8) == name
