"""Fixtures shared by all tests."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import pytest

from support import database_url

__all__ = ["database_url", "mlflow_store"]


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """Where model builds log their MLflow runs while the tests run, when MLflow is
    installed (the `tracking` extra): a SQLite store in a temporary folder, its artifacts
    beside it, not ``mlflow.db`` and ``mlruns/`` in the working folder. Child processes
    inherit it through the environment."""
    if importlib.util.find_spec("mlflow") is None:
        yield None
        return
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # The store takes its default artifact root (./mlruns) from the working folder of the
    # process that creates it: create it from the temporary folder.
    with contextlib.chdir(folder):
        MlflowClient(uri).search_experiments()
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
