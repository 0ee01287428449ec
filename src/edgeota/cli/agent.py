"""``edgeota agent``: the device daemon."""

from __future__ import annotations

import platform
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from edgeota.cli.common import console, fail


def run_agent(
    server: Annotated[str, typer.Option(help="server URL (https:// outside loopback)")],
    data_dir: Annotated[Path, typer.Option(help="the agent's state, slots and downloads")],
    enroll_token: Annotated[
        str | None, typer.Option(envvar="EDGEOTA_ENROLL_TOKEN", help="one-time enrollment token")
    ] = None,
    root: Annotated[
        Path | None, typer.Option(help="trusted TUF root.json to pin (from the server's keys)")
    ] = None,
    ca: Annotated[
        Path | None, typer.Option(help="CA file that signed the server's certificate")
    ] = None,
    name: Annotated[str | None, typer.Option(help="device name shown to operators")] = None,
    hardware_class: Annotated[
        str | None, typer.Option(help="hardware class releases are matched against")
    ] = None,
    model_ram_budget_mb: Annotated[
        int, typer.Option(help="RAM the device allows models to use")
    ] = 1024,
    runtime_port: Annotated[int, typer.Option(help="port of the local inference API")] = 8510,
    poll_interval: Annotated[
        float | None, typer.Option(help="seconds between check-ins (default: the server's)")
    ] = None,
    crash_at: Annotated[str | None, typer.Option(hidden=True)] = None,
    crash_after_bytes: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the update agent: enroll once, then check in, update, health-check, roll back."""
    from edgeota.agent.config import AgentConfig
    from edgeota.agent.reconcile import build_agent
    from edgeota.errors import EdgeotaError

    config = AgentConfig(
        server_url=server,
        data_dir=data_dir,
        ca_file=ca,
        root_file=root,
        enroll_token=enroll_token,
        device_name=name or platform.node(),
        hardware_class=hardware_class or default_hardware_class(),
        model_ram_budget_mb=model_ram_budget_mb,
        runtime_port=runtime_port,
        poll_interval_s=poll_interval,
        crash_at=crash_at,
        crash_after_bytes=crash_after_bytes,
    )
    try:
        agent = build_agent(config)
    except EdgeotaError as e:
        fail(str(e))

    def _stop(signum: int, _frame: FrameType | None) -> None:
        console.print(f"agent: received signal {signum}, stopping")
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent.run_forever()
    except EdgeotaError as e:
        fail(str(e))


def default_hardware_class() -> str:
    return f"{platform.machine().lower().replace('_', '-')}-cpu"
