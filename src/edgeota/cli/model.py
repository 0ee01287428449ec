"""``edgeota model``: build a model's variants into a release bundle, and report on one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from edgeota.cli.common import console, fail, out
from edgeota.errors import EdgeotaError

app = typer.Typer(
    name="model",
    help="Build quantized variants of a model, measure them, and report.",
    no_args_is_help=True,
)


def _report(bundle: Path) -> None:
    from edgeota.modelops.manifest import load_manifest
    from edgeota.modelops.report import columns, header_lines, rows

    try:
        manifest = load_manifest(bundle)
    except EdgeotaError as e:
        fail(str(e), "build one with `edgeota model build MODEL --out BUNDLE`")
    table = Table(
        title=f"variants in {bundle}", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for header in columns(manifest):
        table.add_column(header, no_wrap=True)
    for row in rows(manifest):
        table.add_row(*row.cells)
    for line in header_lines(manifest):
        out.print(line, highlight=False)
    out.print(table)


@app.command("build")
def build(
    model: Annotated[Path, typer.Argument(help="an ONNX, GGUF or safetensors model file")],
    bundle: Annotated[Path, typer.Option("--out", help="the bundle folder to write")],
    probe: Annotated[
        Path | None,
        typer.Option(help=".npz with one array per model input (ONNX); default: generated"),
    ] = None,
    variants: Annotated[
        str | None,
        typer.Option(
            help="comma-separated: ONNX fp32,fp16,int8,int4; GGUF F16,Q8_0,Q4_0; "
            "safetensors fp32,fp16,bf16 (default: all that apply)"
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="replace an existing bundle")] = False,
    seed: Annotated[int, typer.Option(help="seed of a generated probe set")] = 0,
    metric: Annotated[
        str | None, typer.Option(help="ONNX quality metric: psnr_db or cosine (default: auto)")
    ] = None,
    int8_mode: Annotated[
        str, typer.Option(help="int8: dynamic, or static calibrated on the probe set")
    ] = "dynamic",
    int4_block_size: Annotated[int, typer.Option(help="int4: values per scale")] = 32,
    context_length: Annotated[
        int | None, typer.Option(help="GGUF: KV cache context (default: the model's)")
    ] = None,
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow/--no-mlflow",
            help="log the build as an MLflow run when MLflow is installed (MLFLOW_TRACKING_URI)",
        ),
    ] = True,
) -> None:
    """Build MODEL's variants into a bundle that `edgeota release publish` takes."""
    from edgeota.modelops.bundle import BuildOptions, build_bundle
    from edgeota.modelops.catalog import parse_variant_list
    from edgeota.modelops.memory import EstimateConfig
    from edgeota.modelops.onnx_variants import OnnxBuildOptions

    try:
        options = BuildOptions(
            variants=parse_variant_list(variants),
            probe=probe,
            seed=seed,
            metric=metric,
            force=force,
            onnx=OnnxBuildOptions(int8_mode=int8_mode, int4_block_size=int4_block_size),
            estimate=EstimateConfig(context_length=context_length),
            log_mlflow=mlflow,
        )
    except ValueError as e:
        fail(str(e))
    try:
        with console.status("building variants...") as status:
            build_bundle(model, bundle, options, lambda step: status.update(f"{step}..."))
    except EdgeotaError as e:
        fail(f"cannot build {model}: {e}")
    _report(bundle)
    out.print(
        f"publish with: edgeota release publish {bundle} --component NAME --version X.Y.Z",
        highlight=False,
    )


@app.command("report")
def report(
    bundle: Annotated[Path, typer.Argument(help="a bundle made by `edgeota model build`")],
    as_json: Annotated[bool, typer.Option("--json", help="print the manifest as JSON")] = False,
) -> None:
    """Print what a bundle's variants cost and how good they are."""
    if as_json:
        from edgeota.modelops.manifest import load_manifest

        try:
            typer.echo(load_manifest(bundle).dumps(), nl=False)
        except EdgeotaError as e:
            fail(str(e))
        return
    _report(bundle)
