"""``edgeota model build`` and ``edgeota model report`` as a person runs them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgeota.cli.main import app
from modelfiles import image_mlp_onnx

runner = CliRunner()


def text(output: str) -> str:
    """Rich wraps long lines; compare with whitespace collapsed."""
    return " ".join(output.split())


def test_build_prints_the_report_and_report_reads_it_back(tmp_path: Path) -> None:
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    bundle = tmp_path / "bundle"
    result = runner.invoke(
        app, ["model", "build", str(model), "--out", str(bundle), "--variants", "fp32,INT8"]
    )
    assert result.exit_code == 0, result.output
    out = text(result.output)
    assert "fp32" in out and "int8" in out and "PSNR dB" in out
    assert "generated from the declared inputs (seed 0)" in out
    assert f"edgeota release publish {bundle}" in out

    report = runner.invoke(app, ["model", "report", str(bundle)])
    assert report.exit_code == 0, report.output
    assert "int8" in report.output and "peak MiB" in report.output

    as_json = runner.invoke(app, ["model", "report", str(bundle), "--json"])
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.output)
    assert [v["name"] for v in body["variants"]] == ["fp32", "int8"]


def test_mlflow_logging_follows_the_flag(tmp_path: Path, mlflow_store: str | None) -> None:
    """Logged when MLflow is installed (the conftest's store), not with --no-mlflow."""
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    runs = {}
    for flag in ("--mlflow", "--no-mlflow"):
        bundle = tmp_path / flag
        argv = ["model", "build", str(model), "--out", str(bundle), "--variants", "fp32", flag]
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, result.output
        runs[flag] = json.loads((bundle / "manifest.json").read_text())["mlflow_run_id"]
    assert runs["--no-mlflow"] is None
    assert (runs["--mlflow"] is not None) == (mlflow_store is not None)


def test_errors_are_one_line_with_a_hint(tmp_path: Path) -> None:
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    result = runner.invoke(app, ["model", "build", str(model), "--out", str(bundle)])
    assert result.exit_code == 1
    assert "already exists; pass --force" in text(result.output)

    result = runner.invoke(
        app, ["model", "build", str(model), "--out", str(tmp_path / "b"), "--variants", "Q8_0"]
    )
    assert result.exit_code == 1
    assert "unknown variant 'Q8_0'" in text(result.output)

    result = runner.invoke(app, ["model", "report", str(tmp_path)])
    assert result.exit_code == 1
    assert "no manifest.json" in text(result.output)
