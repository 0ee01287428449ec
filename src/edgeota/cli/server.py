"""``edgeota server`` and ``edgeota keys``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from edgeota.cli.common import console, fail, out
from edgeota.errors import EdgeotaError

keys_app = typer.Typer(help="Manage the TUF signing keys.", no_args_is_help=True)


def serve(
    data_dir: Annotated[
        Path | None, typer.Option(help="where the database, keys and artifacts live")
    ] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="serve HTTPS with this certificate")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="private key of --tls-cert")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Run the control-plane server (creates database and development keys on first start)."""
    import uvicorn

    from edgeota.server.app import create_app
    from edgeota.server.bootstrap import prepare
    from edgeota.server.settings import load_settings

    try:
        settings = load_settings(
            data_dir=data_dir, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key
        )
        prepared = prepare(settings)
    except ValidationError as e:
        fail(f"invalid settings: {e.errors()[0]['msg']}")
    except EdgeotaError as e:
        fail(str(e))
    if prepared.created_dev_keys:
        console.print(
            f"created development TUF keys in {settings.data_dir / 'keys'}; production servers "
            "run `edgeota keys init` and keep the root key offline"
        )
    if prepared.first_admin_token:
        out.print(
            f"First admin token (shown once, store it): {prepared.first_admin_token}",
            soft_wrap=True,
        )
    scheme = "https" if settings.tls_cert else "http"
    console.print(f"edgeota server on {scheme}://{settings.host}:{settings.port}")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )


@keys_app.command("init")
def keys_init(
    root_key_dir: Annotated[
        Path, typer.Option(help="where to write the root key; move it offline afterwards")
    ],
    data_dir: Annotated[Path | None, typer.Option(help="the server's data dir")] = None,
) -> None:
    """Create the root key and the online targets/snapshot/timestamp keys."""
    from edgeota.server.bootstrap import init_keys
    from edgeota.server.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    try:
        init_keys(settings, root_key_dir)
    except EdgeotaError as e:
        fail(str(e))
    out.print(f"root key written to {root_key_dir} (keep it offline)")
    out.print(f"online keys written to {settings.online_key_dir}")
    out.print(f"trusted root: {settings.tuf_metadata_dir / '1.root.json'} (give it to agents)")
