"""The demo's verdict: the app container figures count only when its container part ran."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeota.demo import DemoResult


def model_done() -> DemoResult:
    ids = ["dev-1", "dev-2", "dev-3"]
    return DemoResult(
        devices=3,
        updated=ids,
        rolled_back=ids,
        final_versions=dict.fromkeys(ids, "2.0.0"),
        bytes_sent=100,
        bytes_full=200,
    )


def app_done() -> DemoResult:
    return dataclasses.replace(
        model_done(),
        containers=True,
        container_prefix="edgeota-demo-0123abcd-",
        app_bytes_sent=4_000,
        app_bytes_full=2_000_000,
        app_rolled_back=True,
        app_final_version="2.0.0",
        app_serving="2",
    )


def test_model_alone_is_ok_without_container_figures() -> None:
    result = model_done()
    assert result.ok
    assert result.to_json()["containers"] is False


@pytest.mark.parametrize(
    "change",
    [
        {"app_rolled_back": False},  # the broken app was never refused
        {"app_final_version": "3.0.0"},  # the device reports the broken app
        {"app_serving": None},  # nothing answers on the app's port
        {"app_serving": "3"},  # the broken app answers
        {"app_bytes_full": 0},  # no committed event: the update was not seen
        {"app_bytes_sent": 2_000_000},  # the whole image travelled again
    ],
)
def test_container_part_that_went_wrong_is_not_ok(change: dict[str, object]) -> None:
    assert app_done().ok
    assert not dataclasses.replace(app_done(), **change).ok


def test_json_carries_the_container_figures() -> None:
    body = json.loads(json.dumps(app_done().to_json()))
    assert body["containers"] is True
    assert body["container_prefix"] == "edgeota-demo-0123abcd-"
    assert (body["app_bytes_sent"], body["app_bytes_full"]) == (4_000, 2_000_000)
    assert (body["app_final_version"], body["app_serving"]) == ("2.0.0", "2")
    assert body["app_rolled_back"] is True


def test_containers_on_without_podman_fails_at_once_saying_why(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH without podman
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "edgeota", "demo", "--containers", "on", "--work-dir", str(work)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": str(empty), "COLUMNS": "200"},
    )
    assert result.returncode == 1
    said = " ".join((result.stdout + result.stderr).split())
    assert "--containers on, but podman cannot run" in said
    assert "apt-get install podman" in said and "--containers off" in said
    assert not (work / "models").exists()  # it failed before training
