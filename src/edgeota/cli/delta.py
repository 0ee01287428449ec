"""``edgeota delta``: create, apply and inspect delta patches between two versions of a file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeota.cli.common import console, fail, out
from edgeota.delta import DEFAULT_LEVEL, PatchInfo, apply_patch, create_patch, read_patch_info
from edgeota.errors import EdgeotaError, InsufficientSpaceError, VerificationError

app = typer.Typer(
    name="delta",
    help="Delta patches: tensor-aware for safetensors, GGUF and ONNX; streaming for the rest.",
    no_args_is_help=True,
)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"


def _info_table(info: PatchInfo) -> Table:
    table = Table(title=f"patch ({info.container}, format v{info.format_version})")
    table.add_column("method")
    table.add_column("sections", justify="right")
    table.add_column("new bytes", justify="right")
    table.add_column("payload", justify="right")
    for s in info.sections:
        table.add_row(s.name, str(s.count), _size(s.new_bytes), _size(s.patch_bytes))
    table.add_row("control stream", "", "", _size(info.control_size), style="dim")
    return table


def _summary(info: PatchInfo) -> str:
    return (
        f"old {_size(info.old_size)} -> new {_size(info.new_size)}: patch "
        f"{_size(info.patch_size)} ([bold]{100 * info.ratio:.2f}%[/] of new)"
    )


def _hint(e: Exception) -> str | None:
    if isinstance(e, InsufficientSpaceError):
        return "free disk space in OUT's folder, then retry"
    if isinstance(e, VerificationError):
        return "check that OLD is the version the patch was made from"
    return None


@app.command("create")
def create(
    old: Annotated[Path, typer.Argument(help="the version the device has", exists=True)],
    new: Annotated[Path, typer.Argument(help="the version to deliver", exists=True)],
    patch: Annotated[Path, typer.Argument(help="where to write the patch")],
    level: Annotated[int, typer.Option(help="zstd level, 1-22", min=1, max=22)] = DEFAULT_LEVEL,
) -> None:
    """Write PATCH, which turns OLD into NEW."""
    started = time.perf_counter()
    try:
        with console.status("creating patch..."):
            info = create_patch(old, new, patch, level=level)
    except (EdgeotaError, ValueError, OSError) as e:
        fail(f"cannot create {patch}: {e}", _hint(e))
    out.print(_info_table(info))
    out.print(f"{_summary(info)} in {time.perf_counter() - started:.1f}s")


@app.command("apply")
def apply(
    old: Annotated[Path, typer.Argument(help="the version this device has", exists=True)],
    patch: Annotated[Path, typer.Argument(help="a patch made from OLD", exists=True)],
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="where to write the new file")],
) -> None:
    """Rebuild the new version into OUT (verified; OUT is untouched on any error)."""
    started = time.perf_counter()
    try:
        with console.status("applying patch..."):
            apply_patch(old, patch, out_path)
        info = read_patch_info(patch)
    except (EdgeotaError, ValueError, OSError) as e:
        fail(f"cannot apply {patch}: {e}", _hint(e))
    out.print(
        f"wrote {out_path} ({_size(info.new_size)}, sha256 {info.new_sha256}) "
        f"in {time.perf_counter() - started:.1f}s"
    )


@app.command("info")
def info(
    patch: Annotated[Path, typer.Argument(help="a patch file", exists=True)],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show what PATCH applies to, what it produces and how it encodes it."""
    try:
        details = read_patch_info(patch)
    except (EdgeotaError, OSError) as e:
        fail(f"cannot read {patch}: {e}", _hint(e))
    if as_json:
        out.print_json(json.dumps(details.to_dict()))
        return
    out.print(f"old  {details.old_sha256}  {_size(details.old_size)}")
    out.print(f"new  {details.new_sha256}  {_size(details.new_size)}")
    out.print(_info_table(details))
    out.print(_summary(details))
