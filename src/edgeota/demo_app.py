"""A small container app, built with podman from Debian's static busybox: no registry needed.

The demo (``edgeota demo``) and the container tests (``tests/podman_images.py``) use it. The
base image is ``podman import`` of a rootfs holding only ``/usr/bin/busybox``; three app
images are built on it with ``podman build --isolation chroot`` (no process runs: only COPY)
and saved as docker-archives:

- v1: ``/www/health`` ("ok") and ``/www/version`` ("1"), one layer each;
- v2: the same health layer (shared with v1) and ``/www/version`` "2": one layer changes;
- v3 (broken): no ``/www/health``, so the health path answers 404.

Their command is :func:`httpd_command`: busybox httpd serving ``/www`` on ``127.0.0.1``.
After saving, the build removes its tags (and so the images) from podman's storage, so a
device loads them from what it downloaded. Everything carries the caller's prefix (image
tags here, container names in the agent's ``--container-prefix``), so that
:func:`remove_app` removes one run's containers and images and no one else's.

Podman without systemd or cgroup delegation (containers, CI runners) needs
``PODMAN_ARGS`` and, where resource limits cannot be set, ``CONTAINERS_CONF``'s settings;
both are harmless elsewhere. :func:`podman_engine` sets both up.

Errors: a podman command that fails raises
:class:`~edgeota.agent.engine.ContainerEngineError` naming the command and what it said.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from edgeota.agent.engine import CliEngine, ContainerEngineError

BUSYBOX = Path("/usr/bin/busybox")  # Debian's busybox-static: runs in an empty rootfs
PODMAN_ARGS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"
VERSIONS = {"v1": "1", "v2": "2", "v3": "3"}  # image name -> what /www/version answers
BROKEN = "v3"  # built without /www/health
HEALTH_PATH = "/health"
VERSION_PATH = "/version"
_TAIL_CHARS = 500
_COMMAND_TIMEOUT_S = 300.0


class Containers(StrEnum):
    """Whether ``edgeota demo`` shows the app container."""

    AUTO = "auto"  # when podman works here (see podman_problem)
    ON = "on"  # or fail, saying why it cannot
    OFF = "off"


@dataclass(frozen=True)
class AppImages:
    archives: Mapping[str, Path]  # "v1" -> docker-archive file
    image_ids: Mapping[str, str]  # "v1" -> image ID (sha256 hex of its config)


def httpd_command(port: str = "{port}") -> list[str]:
    """busybox httpd on 127.0.0.1:<port> serving /www; a shell as PID 1 so SIGTERM stops it
    at once (a bare httpd as PID 1 ignores SIGTERM and waits out the stop timeout)."""
    return [
        "/bin/busybox",
        "sh",
        "-c",
        f"trap 'exit 0' TERM; /bin/busybox httpd -f -p 127.0.0.1:{port} -h /www & wait",
    ]


def podman_engine(folder: Path) -> CliEngine:
    """Podman with ``PODMAN_ARGS`` and a ``containers.conf`` written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return CliEngine("podman", PODMAN_ARGS, env={"CONTAINERS_CONF": str(conf)})


def podman_problem(engine: CliEngine) -> str | None:
    """Why the app cannot be built and run here (with the fix), or None when it can."""
    if shutil.which(engine.executable) is None:
        return f"{engine.executable} is not installed (apt-get install podman)"
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    try:
        _must(engine, "info", "--format", "{{.Host.OCIRuntime.Name}}", timeout_s=60)
    except ContainerEngineError as e:
        return str(e)
    return None


def build_app_images(engine: CliEngine, work: Path, prefix: str) -> AppImages:
    """Build v1, v2 and broken v3 in ``work`` (a new folder), save each as a docker-archive
    there, and remove the images from the engine's storage again."""
    work.mkdir(parents=True)
    tags: list[str] = []
    archives: dict[str, Path] = {}
    ids: dict[str, str] = {}
    try:
        base = f"localhost/{prefix}base:1"
        tags.append(base)
        _must(engine, "import", str(_base_rootfs_tar(work)), base)
        for name, version in VERSIONS.items():
            tag = f"localhost/{prefix}app:{name}"
            tags.append(tag)
            context = _build_context(work / name, base, version, with_health=name != BROKEN)
            _must(engine, "build", "--isolation", "chroot", "--quiet", "-t", tag, str(context))
            archive = work / f"{name}.tar"
            _must(engine, "save", "--format", "docker-archive", "-o", str(archive), tag)
            archives[name] = archive
            ids[name] = _must(engine, "image", "inspect", "--format", "{{.Id}}", tag).strip()
    finally:
        for tag in reversed(tags):  # apps first: the base is their parent
            _try(engine, "rmi", "--force", tag)
    return AppImages(archives, ids)


def app_container_names(engine: CliEngine, prefix: str) -> list[str]:
    """Containers (running or not) whose names start with ``prefix``."""
    names = _must(engine, "ps", "--all", "--format", "{{.Names}}").split()
    return [n for n in names if n.startswith(prefix)]


def remove_app(engine: CliEngine, prefix: str, image_ids: Iterable[str] = ()) -> None:
    """Remove the containers named ``<prefix>...``, the images tagged ``localhost/<prefix>...``
    and ``image_ids``. Best effort (it runs on the way out of a failure): a command that
    fails is skipped."""
    names = _try(engine, "ps", "--all", "--format", "{{.Names}}").split()
    for name in names:
        if name.startswith(prefix):
            _try(engine, "rm", "--force", "--time", "0", name)
    listed = _try(engine, "images", "--format", "{{.Repository}}:{{.Tag}}").split()
    refs = [r for r in listed if r.startswith(f"localhost/{prefix}")]
    for ref in [*refs, *image_ids]:
        _try(engine, "rmi", "--force", ref)


def _base_rootfs_tar(work: Path) -> Path:
    rootfs = work / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    (rootfs / "bin" / "sh").symlink_to("busybox")
    base_tar = work / "base.tar"
    with tarfile.open(base_tar, "w") as tar:
        tar.add(rootfs, arcname=".")
    return base_tar


def _build_context(context: Path, base: str, version: str, *, with_health: bool) -> Path:
    context.mkdir()
    (context / "health").write_text("ok\n")
    (context / "version").write_text(f"{version}\n")
    # One COPY per file: one layer each, so v2 shares v1's health layer.
    steps = [f"COPY health /www{HEALTH_PATH}"] if with_health else []
    lines = [
        f"FROM {base}",
        *steps,
        f"COPY version /www{VERSION_PATH}",
        f"CMD {json.dumps(httpd_command('8080'))}",
    ]
    (context / "Containerfile").write_text("\n".join(lines) + "\n")
    return context


def _podman(
    engine: CliEngine, *args: str, timeout_s: float = _COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            engine.argv(args),
            env=engine.process_env(),
            capture_output=True,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as e:
        raise ContainerEngineError(
            f"{engine.executable} is not installed (or not on PATH): install podman"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise ContainerEngineError(
            f"`{' '.join(engine.argv(args))}` did not finish within {timeout_s:g} s"
        ) from e


def _try(engine: CliEngine, *args: str) -> str:
    """What the command printed; "" when it failed or could not run."""
    try:
        proc = _podman(engine, *args)
    except ContainerEngineError:
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def _must(engine: CliEngine, *args: str, timeout_s: float = _COMMAND_TIMEOUT_S) -> str:
    proc = _podman(engine, *args, timeout_s=timeout_s)
    if proc.returncode != 0:
        raise ContainerEngineError(
            f"`{' '.join(proc.args)}` failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip()[-_TAIL_CHARS:]}"
        )
    return proc.stdout
