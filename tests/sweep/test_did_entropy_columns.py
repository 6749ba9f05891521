"""A trial's DID-entropy columns from its estimate rows: names carry method and K, and
`did_entropy` is exact where there is an exact value, else SNIS over pi_ref's samples."""

import polars as pl
import pytest

from didray import metrics
from didray.sweep.trial import did_entropy_columns, estimator_name


def rows(k: int) -> pl.DataFrame:
    """Two prompts per method; means: plugin 1.5, snis/policy 3.0, snis/ref 5.0."""
    return pl.DataFrame({"estimator": ["plugin"] * 2 + ["snis"] * 4,
                         "proposal": ["policy"] * 4 + ["ref"] * 2, "k": [k] * 6,
                         "estimate": [1.0, 2.0, 2.5, 3.5, 4.0, 6.0]})


def test_toy_did_entropy_is_the_exact_value():
    assert did_entropy_columns(rows(32), exact=6.25, k=32) == {
        "did_entropy_plugin_k32": 1.5, "did_entropy_snis_policy_k32": 3.0,
        "did_entropy_snis_ref_k32": 5.0, "did_entropy_exact": 6.25, "did_entropy": 6.25,
        "did_entropy_estimator": "exact"}


def test_hf_did_entropy_is_snis_over_ref_samples_and_says_so():
    columns = did_entropy_columns(rows(8), exact=None, k=8)
    assert columns == {
        "did_entropy_plugin_k8": 1.5, "did_entropy_snis_policy_k8": 3.0,
        "did_entropy_snis_ref_k8": 5.0, "did_entropy": 5.0, "did_entropy_estimator": "snis_ref_k8"}
    assert [c for c in columns if metrics.lookup(c) is None] == []


@pytest.mark.parametrize(("method", "name"), [(("plugin", "policy"), "plugin_k8"),
                                              (("snis", "policy"), "snis_policy_k8"),
                                              (("snis", "ref"), "snis_ref_k8")])
def test_estimator_names(method, name):
    assert estimator_name(*method, 8) == name
