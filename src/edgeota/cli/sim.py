"""``edgeota sim``: a simulated fleet and a staged rollout through it."""

from __future__ import annotations

import json
import logging
import signal
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from edgeota.cli.common import CaOpt, console, fail, out


class ReleaseKind(StrEnum):
    GOOD = "good"
    BROKEN = "broken"


def sim(
    devices: Annotated[int, typer.Option(help="simulated devices", min=1)] = 100,
    server: Annotated[
        str | None, typer.Option(help="use this server (default: start one on loopback)")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="EDGEOTA_ADMIN_TOKEN", help="admin token for --server")
    ] = None,
    ca: CaOpt = None,
    release: Annotated[
        ReleaseKind, typer.Option(help="roll out a good release, or one broken on a class")
    ] = ReleaseKind.GOOD,
    broken_share: Annotated[
        float, typer.Option(help="share of the fleet in the hardware class it breaks on")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="draws the fleet, its windows and its faults")] = 0,
    time_scale: Annotated[
        float | None,
        typer.Option(
            help="simulated seconds per wall-clock second, at most: simulated time waits for "
            "devices' steps on a busy machine (default: 10000 up to 300 devices, then "
            "3,000,000 / devices)"
        ),
    ] = None,
    drop_share: Annotated[float, typer.Option(help="share of requests the network loses")] = 0.02,
    crash_share: Annotated[
        float, typer.Option(help="share of devices that crash mid-update")
    ] = 0.02,
    gate_devices: Annotated[
        int, typer.Option(help="simulated-environment gate of the rollout (0: none)")
    ] = 0,
    workers: Annotated[int, typer.Option(help="threads stepping the devices")] = 8,
    timeout: Annotated[float, typer.Option(help="wall-clock seconds before giving up")] = 900.0,
    start: Annotated[
        str | None, typer.Option(help="simulated start time, ISO 8601 (default 2027-03-26Z)")
    ] = None,
    work_dir: Annotated[Path | None, typer.Option(help="where device folders go")] = None,
    keep: Annotated[bool, typer.Option(help="keep the work folder")] = False,
    report: Annotated[Path | None, typer.Option(help="write per-device details here")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the outcome as JSON, as the last line")
    ] = False,
) -> None:
    """Run N simulated devices (the real agent, a simulated runtime) through a staged rollout.

    Exits 0 when the run completed, whether the rollout completed or halted; non-zero when
    the simulation itself failed.
    """
    from edgeota.sim.scenario import (
        DEFAULT_START,
        SimError,
        SimOptions,
        auto_time_scale,
        run_sim,
    )

    # A thousand agents log every step: keep their chatter for --verbose.
    if logging.getLogger().level > logging.DEBUG:
        for name in ("edgeota.agent", "edgeota.sim", "edgeota.trust", "tuf", "httpx"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        opts = SimOptions(
            devices=devices,
            server=server,
            token=token,
            ca=ca,
            release=release.value,
            broken_share=broken_share,
            seed=seed,
            time_scale=time_scale or auto_time_scale(devices),
            drop_share=drop_share,
            crash_share=crash_share,
            gate_devices=gate_devices,
            workers=workers,
            timeout_s=timeout,
            start=DEFAULT_START if start is None else datetime.fromisoformat(start),
            work_dir=work_dir,
            keep=keep,
            report=report,
        )
    except ValueError as e:
        fail(str(e))
    # SIGTERM unwinds like Ctrl-C, so the server this run started is stopped with it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = run_sim(opts, say=lambda m: console.print(f"sim: {m}"))
    except SimError as e:
        fail(str(e))
    except KeyboardInterrupt:
        console.print("sim: interrupted; the processes it started were stopped")
        raise typer.Exit(code=130) from None
    body = result.to_json()
    if as_json:
        typer.echo(json.dumps(body, sort_keys=True))  # one line, the last on stdout
        return
    for key in (
        "devices",
        "final_versions",
        "phases_reached",
        "halted",
        "halt_reason",
        "rolled_back",
        "failed",
        "bytes_sent",
        "seconds",
        "sim_hours",
        "effective_time_scale",
        "clock_held_s",
    ):
        out.print(f"{key}: {body[key]}")
