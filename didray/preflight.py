"""What a sweep needs from its environment besides the sweep file, checked by `didray
validate` and by `didray run` before Ray starts: a failure here is one paragraph (exit 2), not
a traceback after minutes of prepare. Imports nothing heavy (validate stays fast)."""

from __future__ import annotations

import importlib

from didray.config.schema import Sweep
from didray.errors import BadInput


def require(package: str, extra: str) -> None:
    """Fail before anything runs, naming the install line, when a tracker's package is absent."""
    try:
        importlib.import_module(package)
    except ImportError as e:
        raise BadInput(f"tracking.{extra} needs the `{package}` package, which is not "
                       f"installed: pip install 'didray[{extra}]' (or remove tracking.{extra})"
                       ) from e


def mlflow_store_usable(tracking_uri: str | None) -> None:
    """MLflow 3 refuses its file store (`./mlruns`, file://...) unless MLFLOW_ALLOW_FILE_STORE
    is true, and only when the first run starts, after prepare: refused here instead."""
    import mlflow
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    from mlflow.utils.uri import get_uri_scheme

    uri = tracking_uri or mlflow.get_tracking_uri()
    if get_uri_scheme(uri) in ("", "file") and not MLFLOW_ALLOW_FILE_STORE.get():
        raise BadInput(
            f"tracking.mlflow: the tracking store {uri!r} is an MLflow file store, which "
            f"MLflow {mlflow.__version__} refuses unless MLFLOW_ALLOW_FILE_STORE=true is set "
            "where the sweep's driver runs; export MLFLOW_ALLOW_FILE_STORE=true, or give "
            "tracking.mlflow.tracking_uri a server (http://HOST:5000) or a database "
            "(sqlite:///PATH/mlflow.db)")


def trackers_ready(sweep: Sweep) -> None:
    """The trackers `sweep.tracking` names are installed and can start."""
    tracking = sweep.tracking
    if tracking.mlflow:
        require("mlflow", "mlflow")
        mlflow_store_usable(tracking.mlflow.tracking_uri)
    if tracking.wandb:
        require("wandb", "wandb")
