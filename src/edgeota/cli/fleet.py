"""Operator commands: releases, deployments, devices, enrollment tokens."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgeota.cli.common import (
    DEFAULT_SERVER,
    CaOpt,
    JsonOpt,
    ServerOpt,
    TokenOpt,
    admin_client,
    fail,
    out,
)
from edgeota.errors import PolicyError
from edgeota.imagearchive import ConvertedImage, convert_image_archive, is_image_archive
from edgeota.releasefolder import LocalRelease, load_release
from edgeota.targets import check_component_name
from edgeota.versionspec import check_spec

release_app = typer.Typer(help="Publish and list releases.", no_args_is_help=True)
devices_app = typer.Typer(help="List, inspect and revoke devices.", no_args_is_help=True)
enroll_app = typer.Typer(help="Create enrollment tokens for new devices.", no_args_is_help=True)

_NEED_OPERATOR = re.compile(r"[<>=!^~]")


@release_app.command("publish")
def publish(
    path: Annotated[
        Path,
        typer.Argument(help="a model file, a folder with release.json, or an image archive"),
    ],
    component: Annotated[str, typer.Option(help="component name, e.g. denoiser")],
    version: Annotated[str, typer.Option(help="semantic version, e.g. 2.0.0")],
    settings: Annotated[
        Path | None,
        typer.Option(help="container.json of an image archive (see docs/containers.md)"),
    ] = None,
    need: Annotated[
        list[str] | None,
        typer.Option(help="a component this release needs, e.g. 'model>=1.3.0' (repeatable)"),
    ] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload the files, sign them as TUF targets and record the release.

    An image archive (podman save / docker save, docker- or oci-archive) is published with its
    --settings file and one target per layer; files the server stores already are not sent.
    """
    needs = _parse_needs(need or [])
    sent: dict[str, bool] = {}
    with (
        tempfile.TemporaryDirectory(prefix="edgeota-publish-") as scratch,
        admin_client(server, token, ca) as client,
    ):
        local, image = _local_release(path, settings, needs, Path(scratch))
        release = client.publish(
            local, component, version, on_file=lambda f, up: sent.__setitem__(f.file, up)
        )
    if as_json:
        out.print_json(data=release)
        return
    out.print(f"published {component} {version} as [bold]{release['id']}[/]")
    for f in release["files"]:
        how = "uploaded" if sent.get(f["file"]) else "already on the server"
        out.print(f"  {f['target_path']}  {f['role']}  {f['length']} bytes  {how}")
    if image is not None:
        distinct = len({layer.sha256 for layer in image.layers})
        out.print(f"{distinct} layers, {image.layer_bytes} bytes")
    uploaded = [f for f in local.files if sent.get(f.file)]
    out.print(
        f"uploaded {len(uploaded)} of {len(local.files)} files, "
        f"{sum(f.length for f in uploaded)} bytes"
    )


def _local_release(
    path: Path, settings: Path | None, needs: dict[str, str], scratch: Path
) -> tuple[LocalRelease, ConvertedImage | None]:
    """What to publish from PATH: an image archive is converted into ``scratch`` first."""
    if is_image_archive(path):
        if settings is None:
            fail("an image archive needs --settings container.json; see docs/containers.md")
        image = convert_image_archive(path, settings, scratch / "release", needs=needs)
        return load_release(image.folder), image
    if settings is not None:
        fail(f"--settings applies to an image archive only; {path} is not one")
    return _with_needs(load_release(path), needs), None


def _parse_needs(texts: list[str]) -> dict[str, str]:
    """``--need model>=1.3.0`` options as {component: spec}; a bad one ends the command."""
    needs: dict[str, str] = {}
    hint = (
        "give a component and a version spec: comparisons (<, <=, >, >=, ==, !=) with full "
        "versions, joined by commas, e.g. --need 'model>=1.3.0' or --need 'model>=1.3.0,<2.0.0'"
    )
    for text in texts:
        start = _NEED_OPERATOR.search(text)
        if start is None or not text[: start.start()].strip():
            fail(f"--need {text!r} is not a component followed by a version spec", hint)
        name, spec = text[: start.start()].strip(), text[start.start() :].strip()
        try:
            check_component_name(name)
            check_spec(spec)  # the grammar the server and the agent evaluate needs with
        except (PolicyError, ValueError) as e:
            fail(f"--need {text!r}: {e}", hint)
        if name in needs:
            fail(f"--need names {name!r} twice ({needs[name]!r} and {spec!r}); give it once")
        needs[name] = spec
    return needs


def _with_needs(local: LocalRelease, needs: dict[str, str]) -> LocalRelease:
    both = sorted(set(local.needs) & set(needs))
    if both:
        fail(
            f"release.json and --need both give needs for {', '.join(both)}; "
            "give each component in one place"
        )
    return dataclasses.replace(local, needs={**local.needs, **needs})


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
    table = Table("release", "component", "version", "files", "created", "retired")
    for r in releases:
        files = str(len(r["files"]))
        retired = r.get("retired_at") or ""
        table.add_row(r["id"], r["component"], r["version"], files, r["created_at"], retired)
    out.print(table)


@release_app.command("retire")
def retire_release(
    release: Annotated[str, typer.Argument(help="release ID, or component@version")],
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take a release no device desires out of the signed metadata; delete its unshared files."""
    with admin_client(server, token, ca) as client:
        retired = client.retire(release)
    if as_json:
        out.print_json(data=retired)
        return
    out.print(
        f"retired {retired['component']} {retired['version']} ({retired['id']}): its "
        f"{len(retired['files'])} files are no longer signed or served"
    )


@release_app.command("prune")
def prune_releases(
    keep: Annotated[int, typer.Option(min=1, help="how many of the newest releases to keep")],
    component: Annotated[str | None, typer.Option(help="only this component")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would be retired, retire nothing")
    ] = False,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = "",
    ca: CaOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Retire every release older than the newest KEEP of its component that no device
    desires, no rollout ships and no fleet rollback would go back to."""
    with admin_client(server, token, ca) as client:
        result = client.prune(keep, component, dry_run)
    if as_json:
        out.print_json(data=result)
        return
    verb = "would retire" if dry_run else "retired"
    if not result["retired"]:
        out.print(f"nothing to retire beyond the newest {keep} of each component")
    for r in result["retired"]:
        out.print(f"{verb} {r['component']} {r['version']} ({r['id']})")
    for r in result["kept"]:
        out.print(f"kept {r['component']} {r['version']}: {r['reason']}")
    if not dry_run and result["retired"]:
        out.print(f"{result['files_deleted']} stored files deleted")


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
