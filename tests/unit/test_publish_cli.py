"""``edgeota release publish`` options: --settings for image archives, --need for any release.

The server is replaced by a recording ``AdminClient.publish``; the real-server path is in
tests/integration/test_image_publish.py.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeota.adminclient import AdminClient
from edgeota.cli.main import app
from edgeota.releasefolder import LocalRelease

runner = CliRunner()


def text(output: str) -> str:
    """Rich wraps long lines; compare with whitespace collapsed."""
    return " ".join(output.split())


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[LocalRelease]:
    """What reached ``AdminClient.publish`` (nothing is sent anywhere)."""
    seen: list[LocalRelease] = []

    def fake_publish(
        self: AdminClient, release: LocalRelease, component: str, version: str, **_: Any
    ) -> dict[str, Any]:
        seen.append(release)
        return {"id": "rel-test", "files": []}

    monkeypatch.setattr(AdminClient, "publish", fake_publish)
    return seen


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(
        app,
        ["release", "publish", *args, "--component", "app", "--version", "2.0.0", "--token", "t"],
    )
    return result.exit_code, text(result.output)


def image_archive(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        data = json.dumps([{"Config": "c.json", "Layers": ["l.tar"]}]).encode()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def folder_release(path: Path, needs: dict[str, str]) -> Path:
    path.mkdir()
    (path / "app.bin").write_bytes(b"app")
    body = {"schema": 1, "needs": needs, "files": [{"path": "app.bin"}]}
    (path / "release.json").write_text(json.dumps(body))
    return path


def test_an_image_archive_without_settings_is_refused(
    tmp_path: Path, published: list[LocalRelease]
) -> None:
    code, out = invoke(str(image_archive(tmp_path / "app.tar")))
    assert code == 1
    assert "an image archive needs --settings container.json; see docs/containers.md" in out
    assert published == []


def test_settings_for_something_that_is_not_an_image_archive_are_refused(
    tmp_path: Path, published: list[LocalRelease]
) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    (tmp_path / "container.json").write_text("{}")
    code, out = invoke(str(tmp_path / "model.onnx"), "--settings", str(tmp_path / "container.json"))
    assert code == 1 and "--settings applies to an image archive only" in out
    assert published == []


def test_a_broken_image_archive_is_reported_not_published(
    tmp_path: Path, published: list[LocalRelease]
) -> None:
    (tmp_path / "container.json").write_text(
        '{"schema": 1, "health": {"exec": ["/bin/true"]}, "network": "none"}'
    )
    archive = image_archive(tmp_path / "app.tar")  # lists c.json, which it lacks
    code, out = invoke(str(archive), "--settings", str(tmp_path / "container.json"))
    assert code == 1 and "'c.json' is listed but missing from the archive" in out
    assert published == []


def test_needs_are_added_to_a_folder_release(tmp_path: Path, published: list[LocalRelease]) -> None:
    folder = folder_release(tmp_path / "rel", {"runtime": ">=1.0.0"})
    code, out = invoke(str(folder), "--need", "model>=1.3.0,<2.0.0", "--need", "tokenizer!=2.0.0")
    assert code == 0, out
    assert published[0].needs == {
        "runtime": ">=1.0.0",
        "model": ">=1.3.0,<2.0.0",
        "tokenizer": "!=2.0.0",
    }


def test_a_need_given_twice_for_one_component_is_refused(
    tmp_path: Path, published: list[LocalRelease]
) -> None:
    folder = folder_release(tmp_path / "rel", {"model": ">=1.0.0"})
    code, out = invoke(str(folder), "--need", "model>=1.3.0")
    assert code == 1 and "release.json and --need both give needs for model" in out
    code, out = invoke(str(folder), "--need", "x<2.0.0", "--need", "x<3.0.0")
    assert code == 1 and "--need names 'x' twice" in out
    assert published == []


@pytest.mark.parametrize(
    "need",
    [
        "model",
        ">=1.3.0",
        "model^1.3.0",
        "model~1.3.0",
        "model>=1.3",
        "model>=1.0.0,",
        "Model>=1.0.0",
    ],
)
def test_a_need_the_device_cannot_evaluate_is_refused(
    tmp_path: Path, published: list[LocalRelease], need: str
) -> None:
    folder = folder_release(tmp_path / "rel", {})
    code, out = invoke(str(folder), "--need", need)
    assert code == 1
    assert f"--need {need!r}" in out and "e.g. --need 'model>=1.3.0'" in out
    assert published == []
