"""The ``edgeota`` console script."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from edgeota import __version__
from edgeota.cli import (
    agent,
    delta,
    demo,
    device_user,
    device_windows,
    fleet,
    model,
    monitoring,
    rollout,
    server,
    sim,
)

app = typer.Typer(
    name="edgeota",
    help="Over-the-air updates and model ops for generative AI on edge devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("server")(server.serve)
app.add_typer(server.keys_app, name="keys")
app.add_typer(fleet.release_app, name="release")
app.command("deploy")(fleet.deploy)
app.add_typer(rollout.rollout_app, name="rollout")
app.add_typer(fleet.devices_app, name="devices")
fleet.devices_app.command("windows")(device_windows.windows)
app.add_typer(fleet.enroll_app, name="enroll-token")
app.add_typer(agent.agent_app, name="agent")
app.command("demo")(demo.demo)
app.command("sim")(sim.sim)
app.add_typer(delta.app, name="delta", help="Create, apply and inspect delta patches.")
app.add_typer(model.app, name="model")
app.add_typer(monitoring.events_app, name="events")
app.command("audit")(monitoring.audit)
app.add_typer(monitoring.logs_app, name="logs")
app.add_typer(monitoring.feedback_app, name="feedback")
app.add_typer(monitoring.mqtt_app, name="mqtt")
agent.agent_app.command("updates")(device_user.updates)
agent.agent_app.command("feedback")(device_user.feedback)


@app.command("runtime")
def runtime(
    slot_dir: Annotated[Path, typer.Option(help="the slot whose model to serve")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8510,
) -> None:
    """Serve the installed model on the device (local inference API)."""
    from edgeota.runtime.server import main as runtime_main

    raise typer.Exit(
        code=runtime_main(["--slot-dir", str(slot_dir), "--host", host, "--port", str(port)])
    )


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log more")] = False,
    version: Annotated[bool, typer.Option("--version", help="print the version")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


def main() -> None:
    app()
