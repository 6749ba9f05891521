"""What `didray validate` (and `run`, before Ray starts) checks of the environment: a tracker
that would fail after prepare is refused up front, in one paragraph with exit 2."""

from pathlib import Path

import pytest

from didray.cli import main

CI = Path(__file__).parents[1] / "sweeps/ci.yaml"


@pytest.mark.parametrize("uri", ["file:///tmp/didray-mlruns", "/tmp/didray-mlruns"])
def test_an_mlflow_file_store_needs_its_opt_in(uri, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert main(["validate", str(CI), f"tracking.mlflow.tracking_uri={uri}"]) == 2
    err = capsys.readouterr().err
    assert f"the tracking store {uri!r} is an MLflow file store" in err
    assert "export MLFLOW_ALLOW_FILE_STORE=true" in err and "Traceback" not in err
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert main(["validate", str(CI), f"tracking.mlflow.tracking_uri={uri}"]) == 0


def test_a_database_or_server_store_passes(monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for uri in ("sqlite:////tmp/didray-mlflow.db", "http://localhost:5000"):
        assert main(["validate", str(CI), f"tracking.mlflow.tracking_uri={uri}"]) == 0
