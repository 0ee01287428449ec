"""Operator commands on the fleet's history: events, audit trail, device logs, feedback, and
the broker's auth files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeota.cli.common import (
    DEFAULT_SERVER,
    CaOpt,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    admin_client,
    out,
)
from edgeota.fsutil import atomic_write_text

events_app = typer.Typer(help="Search device events across the fleet.", no_args_is_help=True)
logs_app = typer.Typer(
    help="Agent logs devices uploaded after failed updates.", no_args_is_help=True
)
feedback_app = typer.Typer(help="What device users said about releases.", no_args_is_help=True)
mqtt_app = typer.Typer(help="Notices over MQTT: the broker's files.", no_args_is_help=True)

SinceOpt = Annotated[
    str | None, typer.Option(help="only since this time, ISO 8601 (e.g. 2026-05-01T08:00Z)")
]
QueryOpt = Annotated[str | None, typer.Option("--q", help="text to look for (any case)")]
LimitOpt = Annotated[int, typer.Option(help="at most this many, newest first")]


def _short(text: str | None, width: int = 80) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@events_app.command("search")
def search_events(
    device: Annotated[str | None, typer.Option(help="a device ID")] = None,
    release: Annotated[str | None, typer.Option(help="a release ID or component@version")] = None,
    component: Annotated[str | None, typer.Option(help="a component name")] = None,
    event: Annotated[
        list[str] | None, typer.Option(help="an event name, e.g. rolled_back (repeatable)")
    ] = None,
    since: SinceOpt = None,
    q: QueryOpt = None,
    limit: LimitOpt = 50,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find device events by device, release, event name, time or text in the reason."""
    with admin_client(server, token, ca) as client:
        found = client.search_events(
            device=device,
            release=release,
            component=component,
            event=event or [],
            since=since,
            q=q,
            limit=limit,
        )
    if as_json:
        out.print_json(data=found)
        return
    table = Table("received", "device", "event", "component", "version", "reason")
    for e in found:
        table.add_row(
            e["received_at"],
            e["device_id"],
            e["event"],
            e["component"] or "",
            e["version"] or "",
            _short(e["reason"]),
        )
    out.print(table)


def audit(
    actor: Annotated[str | None, typer.Option(help="who, e.g. admin:ops or rollout-loop")] = None,
    action: Annotated[
        str | None, typer.Option(help="what, e.g. rollout.halted, or a prefix like rollout.")
    ] = None,
    target_type: Annotated[str | None, typer.Option(help="release, rollout, device, …")] = None,
    target: Annotated[str | None, typer.Option(help="the target's ID")] = None,
    since: SinceOpt = None,
    q: QueryOpt = None,
    limit: LimitOpt = 50,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the audit trail: operators' actions and the rollout loop's decisions."""
    with admin_client(server, token, ca) as client:
        found = client.audit(
            actor=actor,
            action=action,
            target_type=target_type,
            target=target,
            since=since,
            q=q,
            limit=limit,
        )
    if as_json:
        out.print_json(data=found)
        return
    table = Table("time", "who", "what", "target", "details")
    for e in found:
        details = "; ".join(f"{k}={v}" for k, v in sorted(e["details"].items()))
        table.add_row(
            e["time"],
            e["actor"],
            e["action"],
            f"{e['target_type']} {e['target_id']}",
            _short(details),
        )
    out.print(table)


@logs_app.command("search")
def search_logs(
    device: Annotated[str | None, typer.Option(help="a device ID")] = None,
    release: Annotated[str | None, typer.Option(help="a release ID or component@version")] = None,
    q: QueryOpt = None,
    limit: LimitOpt = 20,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List uploaded logs; ``--q`` searches their text."""
    with admin_client(server, token, ca) as client:
        found = client.logs(device=device, release=release, q=q, limit=limit)
    if as_json:
        out.print_json(data=found)
        return
    table = Table("log", "uploaded", "device", "after", "component", "release", "bytes")
    for row in found:
        table.add_row(
            str(row["id"]),
            row["uploaded_at"],
            row["device_id"],
            row["event"] or "",
            row["component"] or "",
            row["release_id"] or "",
            str(row["size"]),
        )
    out.print(table)


@logs_app.command("show")
def show_log(
    log_id: Annotated[int, typer.Argument(help="the log's number (from logs search)")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Print one uploaded log."""
    with admin_client(server, token, ca) as client:
        text = client.log_text(log_id)
    out.print(text, markup=False, highlight=False, end="")


@feedback_app.command("show")
def show_feedback(
    release: Annotated[str, typer.Argument(help="a release ID or component@version")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ratings of a release (each device's newest), per rollout, and recent comments."""
    with admin_client(server, token, ca) as client:
        body = client.release_feedback(release)
    if as_json:
        out.print_json(data=body)
        return
    out.print(
        f"{body['component']} {body['version']} ({body['release_id']}): {_summary(body['total'])}"
    )
    for s in body["by_rollout"]:
        where = f"rollout {s['rollout_id']}" if s["rollout_id"] else "outside rollouts"
        out.print(f"  {where}: {_summary(s)}")
    for f in body["recent"]:
        comment = f": {f['comment']}" if f["comment"] else ""
        out.print(f"  {f['rating']}/5 from {f['device_id']}{comment}", markup=False)


def _summary(s: dict[str, Any]) -> str:
    if not s["count"]:
        return "no feedback yet"
    share = 100 * (s["negative_share"] or 0)
    plural = "s" if s["count"] != 1 else ""
    return f"{s['count']} rating{plural}, average {s['average']}, {share:.0f}% negative (1-2)"


@mqtt_app.command("auth-files")
def mqtt_auth_files(
    out_dir: Annotated[Path, typer.Option(help="where to write passwd and acl")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Write mosquitto's password_file and acl_file for the enrolled devices.

    Run it after enrolling or revoking devices (or from a timer), then send mosquitto SIGHUP.
    """
    with admin_client(server, token, ca) as client:
        files = client.mqtt_auth_files()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "passwd", files["password_file"], 0o600)
    atomic_write_text(out_dir / "acl", files["acl_file"], 0o644)
    out.print(
        f"wrote {out_dir / 'passwd'} ({files['devices']} devices) and {out_dir / 'acl'}; "
        "make the broker read them again: kill -HUP <mosquitto's pid>"
    )
