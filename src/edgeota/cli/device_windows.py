"""``edgeota devices windows``: show or set a device's maintenance windows and deferrals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from edgeota.cli.common import DEFAULT_SERVER, CaOpt, ServerOpt, TokenOpt, admin_client, out
from edgeota.cli.rollout import parse_duration
from edgeota.rollout.windows import MaintenanceWindow

WINDOW_HELP = (
    "a window as 'CRON;DURATION[;ZONE]', e.g. '0 2 * * *;90m;Europe/Berlin': opens at the "
    "5-field cron times, read in ZONE (default: --tz, else the device's zone), and stays open "
    "for DURATION (600, 90s, 30m, 2h, 1d; 1 minute to 7 days); repeat for more windows"
)


def parse_window(text: str) -> dict[str, Any]:
    """``{cron, duration_s, time_zone}`` from ``CRON;DURATION[;ZONE]``; the server validates."""
    parts = [p.strip() for p in text.split(";")]
    if len(parts) not in (2, 3) or not all(parts):
        raise typer.BadParameter(
            f"{text!r}: write a window as 'CRON;DURATION' or 'CRON;DURATION;ZONE', "
            "e.g. '0 2 * * *;60m;Europe/Berlin'"
        )
    return {
        "cron": parts[0],
        "duration_s": round(parse_duration(parts[1])),
        "time_zone": parts[2] if len(parts) == 3 else None,
    }


def windows(
    device_id: Annotated[str, typer.Argument(help="the device's id")],
    window: Annotated[list[str] | None, typer.Option("--window", "-w", help=WINDOW_HELP)] = None,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            help="IANA zone of this command's windows that name none (default: the zone set "
            "before, else the one the device reports, else UTC)",
        ),
    ] = None,
    max_deferrals: Annotated[
        int | None, typer.Option(help="how often the device's user may put an update off")
    ] = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="remove every window: the device may switch any time")
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Show a device's maintenance windows and when each opens next; or set them.

    --window replaces all windows, --clear removes them; --tz and --max-deferrals change
    only themselves; what is not given stays as it is. With none of these it only shows.
    """
    if clear and window:
        raise typer.BadParameter("give --window or --clear, not both")
    given = [parse_window(w) for w in window or []]
    changing = clear or bool(given) or tz is not None or max_deferrals is not None
    with admin_client(server, token, ca) as client:
        device = client.device(device_id)
        if changing:
            kept = [] if clear else device["windows"]
            device = client.set_windows(
                device_id,
                given or kept,
                time_zone=tz if tz is not None else device["time_zone"],
                max_deferrals=(
                    max_deferrals if max_deferrals is not None else device["max_deferrals"]
                ),
            )
    shown = _with_next_openings(device, datetime.now(UTC))
    if as_json:
        out.print_json(data=shown)
        return
    _print(shown)


def _with_next_openings(device: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The device's schedule, each window with its next opening in the window's zone."""
    rows = []
    for w in device["windows"]:
        window = MaintenanceWindow(
            w["cron"], w["duration_s"], w["time_zone"] or device["time_zone"] or "UTC"
        )
        start = window.next_start(now)
        opens = None if start is None else start.astimezone(window.zone).isoformat()
        rows.append({**w, "time_zone": window.time_zone, "next_opening": opens})
    return {
        "device": device["id"],
        "time_zone": device["time_zone"],
        "reported_time_zone": device.get("reported_time_zone"),
        "max_deferrals": device["max_deferrals"],
        "windows": rows,
    }


def _print(shown: dict[str, Any]) -> None:
    if not shown["windows"]:
        out.print(f"{shown['device']}: no maintenance windows; it may switch at any time")
    else:
        table = Table("cron", "open for", "zone", "next opening", title=f"{shown['device']}")
        for w in shown["windows"]:
            table.add_row(
                w["cron"], _duration(w["duration_s"]), w["time_zone"], w["next_opening"] or "never"
            )
        out.print(table)
    out.print(f"user may defer an update {shown['max_deferrals']} time(s)")


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
