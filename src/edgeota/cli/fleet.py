"""Operator commands: releases, deployments, devices, enrollment tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeota.cli.common import DEFAULT_SERVER, CaOpt, ServerOpt, TokenOpt, admin_client, fail, out
from edgeota.errors import FormatError
from edgeota.releasefolder import load_release

release_app = typer.Typer(help="Publish and list releases.", no_args_is_help=True)
devices_app = typer.Typer(help="List, inspect and revoke devices.", no_args_is_help=True)
enroll_app = typer.Typer(help="Create enrollment tokens for new devices.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@release_app.command("publish")
def publish(
    path: Annotated[Path, typer.Argument(help="a model file, or a folder with release.json")],
    component: Annotated[str, typer.Option(help="component name, e.g. denoiser")],
    version: Annotated[str, typer.Option(help="semantic version, e.g. 2.0.0")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload the files, sign them as TUF targets and record the release."""
    try:
        local = load_release(path)
    except FormatError as e:
        fail(str(e))
    with admin_client(server, token, ca) as client:
        release = client.publish(local, component, version)
    if as_json:
        out.print_json(data=release)
        return
    out.print(f"published {component} {version} as [bold]{release['id']}[/]")
    for f in release["files"]:
        out.print(f"  {f['target_path']}  {f['length']} bytes  {f['role']}")


@release_app.command("list")
def list_releases(
    component: Annotated[str | None, typer.Option(help="only this component")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List releases, newest version first."""
    with admin_client(server, token, ca) as client:
        releases = client.releases(component)
    if as_json:
        out.print_json(data=releases)
        return
    table = Table("release", "component", "version", "files", "created")
    for r in releases:
        table.add_row(r["id"], r["component"], r["version"], str(len(r["files"])), r["created_at"])
    out.print(table)


def deploy(
    release: Annotated[str, typer.Argument(help="release ID, or component@version")],
    group: Annotated[str, typer.Option(help="device group to move to this release")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Set the desired state of every device in a group to a release."""
    with admin_client(server, token, ca) as client:
        result = client.deploy(release, group)
    out.print(
        f"deployment {result['id']}: {result['component']} {result['version']} -> group "
        f"{result['group']} ({result['devices']} devices now)"
    )


@devices_app.command("list")
def list_devices(
    group: Annotated[str | None, typer.Option(help="only devices of this group")] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List devices with their installed and desired versions."""
    with admin_client(server, token, ca) as client:
        devices = client.devices(group)
    if as_json:
        out.print_json(data=devices)
        return
    table = Table("device", "name", "class", "groups", "installed", "desired", "state", "seen")
    for d in devices:
        installed = ", ".join(f"{c['component']} {c['version']}" for c in d["components"])
        states = ", ".join(c["state"] for c in d["components"])
        desired = ", ".join(f"{k} {v}" for k, v in d["desired"].items())
        table.add_row(
            d["id"],
            d["name"],
            d["hardware_class"],
            ",".join(d["groups"]),
            installed,
            desired,
            states,
            d["last_seen_at"] or "",
        )
    out.print(table)


@devices_app.command("show")
def show_device(
    device_id: str,
    events: Annotated[int, typer.Option(help="how many recent events to show")] = 20,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Show one device and its recent events."""
    with admin_client(server, token, ca) as client:
        device = client.device(device_id)
        recent = client.events(device_id, events)
    out.print_json(data=device)
    choices = device.get("variant_choice") or {}
    if choices:
        variants = Table("component", "variant", "status", "why", title="model variant choice")
        for component, c in sorted(choices.items()):
            variants.add_row(component, c["variant"] or "-", c["status"], c["reason"])
        out.print(variants)
    table = Table("seq", "time", "component", "event", "state", "version", "reason")
    for e in recent:
        table.add_row(
            str(e["seq"]),
            e["time"],
            e["component"] or "",
            e["event"],
            e["state"] or "",
            e["version"] or "",
            e["reason"] or "",
        )
    out.print(table)


@devices_app.command("revoke")
def revoke_device(
    device_id: str, server: ServerOpt = DEFAULT_SERVER, token: TokenOpt = "", ca: CaOpt = None
) -> None:
    """Revoke a device's credential: it can no longer check in."""
    with admin_client(server, token, ca) as client:
        client.revoke(device_id)
    out.print(f"revoked {device_id}")


@enroll_app.command("create")
def create_enroll_token(
    group: Annotated[list[str] | None, typer.Option(help="group(s) the device joins")] = None,
    expires_in: Annotated[int, typer.Option(help="seconds until the token expires")] = 86400,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
) -> None:
    """Create a one-time enrollment token."""
    with admin_client(server, token, ca) as client:
        secret = client.enrollment_token(group or [], expires_in)
    out.print(secret)
