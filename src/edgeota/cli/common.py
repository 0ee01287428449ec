"""What the commands share: the console, error reporting, the admin client options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from edgeota.adminclient import AdminClient
from edgeota.errors import EdgeotaError

console = Console(stderr=True)
out = Console()

ServerOpt = Annotated[str, typer.Option("--server", envvar="EDGEOTA_SERVER", help="server URL")]
TokenOpt = Annotated[
    str,
    typer.Option(
        "--token", envvar="EDGEOTA_ADMIN_TOKEN", help="admin token (printed by the first start)"
    ),
]
CaOpt = Annotated[
    Path | None,
    typer.Option("--ca", envvar="EDGEOTA_CA", help="CA file that signed the server's certificate"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
DEFAULT_SERVER = "http://127.0.0.1:8080"


def fail(message: str, hint: str | None = None) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    if hint:
        console.print(f"[dim]hint:[/] {hint}")
    raise typer.Exit(code=1)


@contextmanager
def admin_client(server: str, token: str, ca: Path | None) -> Iterator[AdminClient]:
    if not token:
        fail("no admin token", "pass --token or set EDGEOTA_ADMIN_TOKEN")
    try:
        with AdminClient(server, token, ca) as client:
            yield client
    except EdgeotaError as e:
        fail(str(e))
