"""``edgeota delta create / apply / info``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from edgeota.cli.delta import app

runner = CliRunner()


def text(output: str) -> str:
    """Rich wraps long lines; compare with whitespace collapsed."""
    return " ".join(output.split())


def make_files(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    data = os.urandom(100_000)
    old.write_bytes(data)
    new.write_bytes(data[:50_000] + b"changed" + data[50_000:])
    return old, new


def test_create_apply_info(tmp_path: Path) -> None:
    old, new = make_files(tmp_path)
    patch, out = tmp_path / "p.delta", tmp_path / "out.bin"
    result = runner.invoke(app, ["create", str(old), str(new), str(patch)])
    assert result.exit_code == 0, result.output
    assert "% of new" in text(result.output)
    assert "copy" in result.output

    result = runner.invoke(app, ["apply", str(old), str(patch), str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == new.read_bytes()

    result = runner.invoke(app, ["info", str(patch), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["new_size"] == new.stat().st_size
    assert info["container"] == "generic"
    assert {s["method"] for s in info["sections"]} >= {"copy"}

    result = runner.invoke(app, ["info", str(patch)])
    assert result.exit_code == 0
    assert info["old_sha256"] in text(result.output)


def test_errors_exit_non_zero_with_a_message(tmp_path: Path) -> None:
    old, new = make_files(tmp_path)
    patch, out = tmp_path / "p.delta", tmp_path / "out.bin"
    assert runner.invoke(app, ["create", str(old), str(new), str(patch)]).exit_code == 0

    result = runner.invoke(app, ["apply", str(new), str(patch), str(out)])
    assert result.exit_code == 1
    assert "not the base" in text(result.output)
    assert not out.exists()

    result = runner.invoke(app, ["apply", str(old), str(patch), str(old)])
    assert result.exit_code == 1
    assert "is OLD" in text(result.output)

    patch.write_bytes(patch.read_bytes()[:-5])
    result = runner.invoke(app, ["info", str(patch)])
    assert result.exit_code == 1
    assert "truncated" in text(result.output)
