"""The ``edgeota`` console script."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from edgeota import __version__
from edgeota.cli import agent, delta, demo, fleet, rollout, server

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
app.add_typer(fleet.enroll_app, name="enroll-token")
app.command("agent")(agent.run_agent)
app.command("demo")(demo.demo)
app.add_typer(delta.app, name="delta", help="Create, apply and inspect delta patches.")


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
