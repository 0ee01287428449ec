"""``edgeota demo``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeota.cli.common import console, out
from edgeota.demo_app import Containers


def demo(
    as_json: Annotated[
        bool, typer.Option("--json", help="table to stderr; last stdout line is JSON")
    ] = False,
    devices: Annotated[int, typer.Option(help="how many agents to start")] = 3,
    work_dir: Annotated[
        Path | None, typer.Option(help="keep files and logs here (default: a temp dir)")
    ] = None,
    containers: Annotated[
        Containers,
        typer.Option(
            help="also update an app container on device 1 with podman: auto = when podman "
            "and busybox-static work here; on = fail if they do not"
        ),
    ] = Containers.AUTO,
) -> None:
    """Watch 3 devices get a signed model update, then roll back a broken one on their own
    (and, with podman, device 1 update an app container and refuse a broken one)."""
    from edgeota.demo import run_demo
    from edgeota.errors import EdgeotaError

    base = console if as_json else out
    # Logs and pipes get 80 columns by default: too narrow for the device table.
    screen = Console(stderr=as_json, width=max(base.width, 110), highlight=False)

    def report(step: str, fleet: list[dict[str, Any]]) -> None:
        screen.print(f"[bold cyan]>[/] {step}")
        if fleet:
            screen.print(_table(fleet))

    with tempfile.TemporaryDirectory(prefix="edgeota-demo-") as tmp:
        work = work_dir or Path(tmp)
        screen.print(f"working in {work} (logs in {work / 'logs'})")
        try:
            result = run_demo(work, report, devices=devices, containers=containers)
        except KeyboardInterrupt:
            console.print("interrupted: all demo processes were stopped, containers removed")
            raise typer.Exit(code=130) from None
        except (TimeoutError, RuntimeError, EdgeotaError) as e:
            console.print(f"[bold red]demo failed:[/] {e}; see the logs in {work / 'logs'}")
            raise typer.Exit(code=1) from None
    verdict = "[green]as expected[/]" if result.ok else "[red]NOT as expected[/]"
    screen.print(f"demo finished in {result.seconds:.1f} s: {verdict}")
    if as_json:
        print(json.dumps(result.to_json()))
    if not result.ok:
        raise typer.Exit(code=1)


def _table(fleet: list[dict[str, Any]]) -> Table:
    table = Table("device", "name", "component", "installed", "state", "last event", "reason")
    for d in fleet:
        for c in d["components"] or [{}]:
            table.add_row(
                d["id"],
                d["name"],
                c.get("component") or "-",
                c.get("version") or "-",
                c.get("state") or "-",
                c.get("last_event") or "-",
                (c.get("last_reason") or "")[:60],
            )
    return table
