"""``edgeota rollout``: staged rollouts, with per-phase progress."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress_bar import ProgressBar
from rich.table import Table

from edgeota.cli.common import (
    DEFAULT_SERVER,
    CaOpt,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    admin_client,
    fail,
    out,
)

rollout_app = typer.Typer(
    help="Staged rollouts: field test, growing percentages, automatic halt, fleet rollback.",
    no_args_is_help=True,
)


class Switch(StrEnum):
    WINDOW = "window"
    NOW = "now"


IdArg = Annotated[int, typer.Argument(help="rollout id (see `edgeota rollout list`)")]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_STATUS_STYLE = {
    "running": "green",
    "completed": "bold green",
    "halted": "bold red",
    "paused": "yellow",
    "aborted": "dim",
    "rolling_back": "magenta",
    "scheduled": "cyan",
}


def parse_duration(text: str) -> float:
    """Seconds from ``600``, ``90s``, ``30m``, ``2h`` or ``1d``."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration; write e.g. 600, 30m, 2h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_percentages(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: give comma-separated percentages ending at 100, e.g. 1,10,50,100"
        ) from None


@rollout_app.command("create")
def create(
    release: Annotated[str, typer.Argument(help="release ID, or component@version")],
    group: Annotated[str, typer.Option(help="target group (static or dynamic)")],
    field_test_device: Annotated[
        list[str] | None, typer.Option(help="a device of the field-test phase (repeatable)")
    ] = None,
    field_test_group: Annotated[
        str | None, typer.Option(help="group whose target devices form the field test")
    ] = None,
    percentages: Annotated[
        str, typer.Option(help="cumulative share of devices per phase")
    ] = "1,10,50,100",
    success_share: Annotated[
        float, typer.Option(help="share of a phase that must be updated to advance")
    ] = 0.95,
    max_failed: Annotated[
        int | None, typer.Option(help="halt when more devices of a phase fail")
    ] = None,
    max_failed_share: Annotated[
        float | None, typer.Option(help="halt when a larger share fails (server default 0.05)")
    ] = None,
    no_share_limit: Annotated[
        bool, typer.Option("--no-share-limit", help="no failure share limit (needs --max-failed)")
    ] = False,
    soak: Annotated[
        str, typer.Option(help="how long a phase must stay healthy before the next: 30m, 2h")
    ] = "0",
    start_at: Annotated[
        str | None, typer.Option(help="ISO 8601 start time, e.g. 2026-03-01T02:00:00Z")
    ] = None,
    seed: Annotated[str | None, typer.Option(help="spreads devices over phases")] = None,
    switch: Annotated[
        Switch, typer.Option(help="switch in the devices' maintenance windows, or at once")
    ] = Switch.WINDOW,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a staged rollout of a release to a group; the server starts and advances it."""
    if field_test_device and field_test_group:
        fail("give --field-test-device or --field-test-group, not both")
    if no_share_limit and max_failed_share is not None:
        fail("--no-share-limit and --max-failed-share contradict each other")
    body: dict[str, Any] = {
        "release": release,
        "group": group,
        "percentages": parse_percentages(percentages),
        "success_share": success_share,
        "soak_s": parse_duration(soak),
        "switch_policy": switch.value,
    }
    optional = {
        "field_test_devices": field_test_device or None,
        "field_test_group": field_test_group,
        "max_failed": max_failed,
        "max_failed_share": max_failed_share,
        "start_at": start_at,
        "seed": seed,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if no_share_limit:
        body["max_failed_share"] = None
    with admin_client(server, token, ca) as client:
        rollout = client.create_rollout(body)
    if as_json:
        out.print_json(data=rollout)
        return
    out.print(
        f"rollout [bold]{rollout['id']}[/]: {rollout['component']} {rollout['version']} -> "
        f"group {rollout['group']} ({rollout['target_devices']} devices now), "
        f"{len(rollout['phases'])} phases, starts {rollout['start_at']}"
    )


@rollout_app.command("status")
def status(
    rollout_id: IdArg,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one rollout and the progress of each phase."""
    with admin_client(server, token, ca) as client:
        rollout = client.rollout(rollout_id)
    if as_json:
        out.print_json(data=rollout)
        return
    print_rollout(rollout)


def print_rollout(r: dict[str, Any]) -> None:
    style = _STATUS_STYLE.get(r["status"], "")
    target = r["group"] if r["group"] is not None else "the devices it rolls back"
    out.print(
        f"rollout [bold]{r['id']}[/]  {r['component']} {r['version']}  -> {target}  "
        f"[{style}]{r['status']}[/]"
        + (f"  phase {r['current_phase']}" if r["current_phase"] else "")
    )
    if r["halt_reason"]:
        out.print(f"[bold red]halted:[/] {r['halt_reason']}")
    if r["rollback_of"] is not None:
        out.print(f"rolls back rollout {r['rollback_of']}")
    if r["rolled_back_by"] is not None:
        out.print(f"rolled back by rollout {r['rolled_back_by']}")
    gates = {_gate(p) for p in r["phases"]}
    if len(gates) == 1:
        out.print(f"each phase: {gates.pop()}")
    table = Table("phase", "devices", "progress", "updated", "in progress", "failed", "started")
    for p in r["phases"]:
        started = p["started_at"] is not None
        table.add_row(
            p["name"] if started else f"[dim]{p['name']}[/]",
            str(p["devices"]),
            ProgressBar(total=max(p["devices"], 1), completed=p["updated"], width=16),
            str(p["updated"]),
            str(p["pending"] + p["updating"]),
            str(p["failed"] + p["rolled_back"]),
            _short_time(p["started_at"]) if started else "",
        )
    out.print(table)
    if len(gates) > 1:
        for p in r["phases"]:
            out.print(f"{p['name']}: {_gate(p)}")


def _gate(phase: dict[str, Any]) -> str:
    limits = []
    if phase["max_failed"] is not None:
        limits.append(f"{phase['max_failed']} devices")
    if phase["max_failed_share"] is not None:
        limits.append(f"{phase['max_failed_share']:.0%}")
    text = f"advance at {phase['success_share']:.0%} updated, halt above {' or '.join(limits)}"
    text += " failed"
    if phase["soak_s"]:
        text += f", soak {phase['soak_s']:g} s"
    return text


def _short_time(iso: str) -> str:
    return iso[:19].replace("T", " ")


@rollout_app.command("list")
def list_rollouts(
    status: Annotated[str | None, typer.Option(help="only rollouts in this status")] = None,
    component: Annotated[str | None, typer.Option(help="only this component")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List rollouts, newest first."""
    with admin_client(server, token, ca) as client:
        rollouts = client.rollouts(status, component)
    if as_json:
        out.print_json(data=rollouts)
        return
    table = Table("id", "release", "group", "status", "phase", "progress", "failed", "created")
    for r in rollouts:
        updated = sum(p["updated"] for p in r["phases"])
        failed = sum(p["failed"] + p["rolled_back"] for p in r["phases"])
        style = _STATUS_STYLE.get(r["status"], "")
        table.add_row(
            str(r["id"]),
            f"{r['component']} {r['version']}",
            r["group"] or f"(rollback of {r['rollback_of']})",
            f"[{style}]{r['status']}[/]",
            r["current_phase"] or "",
            f"{updated}/{r['target_devices']}",
            str(failed),
            _short_time(r["created_at"]),
        )
    out.print(table)


def _command(rollout_id: int, command: str, server: str, token: str, ca: Path | None) -> None:
    with admin_client(server, token, ca) as client:
        rollout = client.rollout_command(rollout_id, command)
        back = (
            client.rollout(rollout["rolled_back_by"])
            if command == "rollback" and rollout["rolled_back_by"] is not None
            else None
        )
    out.print(f"rollout {rollout_id}: {rollout['status']}")
    if back is not None:
        out.print(
            f"re-published the previous release as {back['component']} {back['version']} "
            f"({back['release_id']}); rollout {back['id']} moves "
            f"{back['target_devices']} devices to it"
        )


@rollout_app.command("pause")
def pause(
    rollout_id: IdArg, server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """Hold the rollout where it is: no new device is told until it is resumed."""
    _command(rollout_id, "pause", server, token, ca)


@rollout_app.command("resume")
def resume(
    rollout_id: IdArg, server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """Go on after a pause, or after a halt (accepting the failures seen so far)."""
    _command(rollout_id, "resume", server, token, ca)


@rollout_app.command("abort")
def abort(
    rollout_id: IdArg, server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """Stop for good; devices already updated keep the release."""
    _command(rollout_id, "abort", server, token, ca)


@rollout_app.command("rollback")
def rollback(
    rollout_id: IdArg, server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """Move every device this rollout told back to the previous release's content.

    The content is re-published under a higher version, since installed versions never go down.
    """
    _command(rollout_id, "rollback", server, token, ca)
