"""``edgeota agent``: the device daemon; ``edgeota agent defer``: the user puts an update off."""

from __future__ import annotations

import os
import platform
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from edgeota.cli.common import console, fail, out

agent_app = typer.Typer(
    help="Run the update agent (give --server and --data-dir), or act on a running one.",
    invoke_without_command=True,
)


@agent_app.callback()
def run_agent(
    ctx: typer.Context,
    server: Annotated[
        str | None, typer.Option(help="server URL (https:// outside loopback)")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="the agent's state, slots and downloads")
    ] = None,
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
    accelerator: Annotated[
        list[str] | None,
        typer.Option(help="an accelerator the device has (repeat for more), e.g. cuda"),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            help="the device's IANA time zone, e.g. Europe/Berlin (default: the system's, from "
            "TZ or /etc/localtime, else UTC)"
        ),
    ] = None,
    runtime_port: Annotated[int, typer.Option(help="port of the local inference API")] = 8510,
    poll_interval: Annotated[
        float | None, typer.Option(help="seconds between check-ins (default: the server's)")
    ] = None,
    local_api_port: Annotated[
        int,
        typer.Option(help="port of the agent's local API (updates, feedback, /metrics); 0: off"),
    ] = 8500,
    notices: Annotated[
        bool, typer.Option(help="check in at once on a notice (MQTT, else long-poll)")
    ] = True,
    mqtt_ca: Annotated[
        Path | None, typer.Option(help="CA of the MQTT broker's certificate (default: --ca)")
    ] = None,
    container_engine: Annotated[
        str | None,
        typer.Option(help="run container components with this engine: podman, docker or a path"),
    ] = None,
    container_engine_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="a global flag for the engine (repeat), e.g. --container-engine-arg=--runtime "
            "--container-engine-arg=runc"
        ),
    ] = None,
    container_prefix: Annotated[
        str, typer.Option(help="name prefix of the containers this agent runs")
    ] = "edgeota-",
    crash_at: Annotated[str | None, typer.Option(hidden=True)] = None,
    crash_after_bytes: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run the update agent: enroll once, then check in, update, health-check, roll back."""
    if ctx.invoked_subcommand is not None:
        return
    if server is None or data_dir is None:
        fail("give --server and --data-dir to run the agent", "edgeota agent --help")
    from edgeota.agent.agentlog import install_file_log
    from edgeota.agent.config import AgentConfig, ContainerEngineConfig, system_time_zone
    from edgeota.agent.wiring import build_agent
    from edgeota.errors import EdgeotaError

    try:
        config = AgentConfig(
            server_url=server,
            data_dir=data_dir,
            ca_file=ca,
            root_file=root,
            enroll_token=enroll_token,
            device_name=name or platform.node(),
            hardware_class=hardware_class or default_hardware_class(),
            model_ram_budget_mb=model_ram_budget_mb,
            accelerators=tuple(accelerator or ()),
            timezone=timezone or system_time_zone(os.environ),
            runtime_port=runtime_port,
            poll_interval_s=poll_interval,
            local_api_port=local_api_port or None,
            notices=notices,
            mqtt_ca_file=mqtt_ca,
            containers=None
            if container_engine is None
            else ContainerEngineConfig(
                container_engine, tuple(container_engine_arg or ()), prefix=container_prefix
            ),
            crash_at=crash_at,
            crash_after_bytes=crash_after_bytes,
        )
    except ValueError as e:
        fail(str(e))
    install_file_log(data_dir)  # its tail is uploaded when an update fails
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


@agent_app.command("defer")
def defer(
    data_dir: Annotated[Path, typer.Option(help="the agent's data folder")],
    component: Annotated[
        str | None, typer.Option(help="the component whose update to put off (default: any)")
    ] = None,
) -> None:
    """Put off the update waiting for its maintenance window, to the window after it.

    The running agent applies the deferral at its next pass and reports it; once the
    deferrals the operator allows are used up, the update is applied in the next window.
    """
    from datetime import UTC, datetime

    from edgeota.agent.journal import Journal
    from edgeota.agent.schedule import parse_schedule, request_deferral
    from edgeota.agent.statemachine import State
    from edgeota.errors import EdgeotaError
    from edgeota.rollout.windows import can_defer, forced_apply_at

    try:
        journal = Journal.load(data_dir / "journal.json")  # written atomically: safe to read
    except EdgeotaError as e:
        fail(str(e))
    waiting = [
        (name, rec)
        for name, rec in sorted(journal.components.items())
        if rec.state in (State.DOWNLOADING, State.STAGED)
        and rec.pending is not None
        and (component is None or name == component)
    ]
    if not waiting:
        fail(f"no update is waiting to be applied in {data_dir}", "nothing to defer")
    now = datetime.now(UTC)
    for name, rec in waiting:
        assert rec.pending is not None
        wait = rec.wait if rec.wait and rec.wait.release_id == rec.pending.release_id else None
        if wait is not None and wait.known:
            sched = parse_schedule(wait.schedule)
            if not can_defer(wait.deferrals_used, sched.max_deferrals):
                forced = forced_apply_at(
                    sched.windows, now, wait.deferrals_used, sched.max_deferrals
                )
                fail(
                    f"{name} {rec.pending.version}: all {sched.max_deferrals} deferrals are used",
                    f"it is applied in the next maintenance window ({forced:%Y-%m-%d %H:%M} UTC)"
                    if forced
                    else None,
                )
        request_deferral(data_dir, name, rec.pending.release_id, now)
        out.print(f"deferred {name} {rec.pending.version}; the agent applies it at its next pass")
