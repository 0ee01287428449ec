"""The container engine boundary: podman or docker, driven through its command line.

:class:`ContainerEngine` is the few operations :class:`~edgeota.agent.container_driver.
ContainerDriver` needs; :class:`CliEngine` runs them as ``podman``/``docker`` commands (both
take the same arguments for everything used here: one code path), and :class:`FakeEngine`
keeps containers in memory for unit tests.

An image travels as an extracted docker-archive: a folder with ``manifest.json``, the config
JSON and one tar file per layer. Its ID is the sha256 of the config file (what ``podman
images --no-trunc`` shows); :meth:`CliEngine.load` streams a tar of the folder into
``<engine> load`` without building the archive in memory or on disk.

Errors: :class:`ContainerEngineError` (an :class:`~edgeota.errors.EdgeotaError`) says which
command failed, with the end of what it printed. A missing container is not an error:
``inspect`` answers None, ``remove`` and ``logs`` do nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import subprocess
import tarfile
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgeota.containerspec import IMAGE_MANIFEST
from edgeota.errors import EdgeotaError, FormatError
from edgeota.fsutil import safe_join

_TAIL_CHARS = 600
_HASH_CHUNK = 1 << 20
_MISSING = ("no such container", "no such object", "no container with name or id")


class ContainerEngineError(EdgeotaError):
    """The container engine could not do what it was asked (or is not installed)."""


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str  # the engine's word: created, running, exited, paused, ...
    running: bool
    exit_code: int
    image_id: str  # bare sha256 hex
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None  # None: it did not finish within its timeout
    output: str


@dataclass(frozen=True)
class RunRequest:
    """One detached ``run``: the driver decides every option (see ``run_request``)."""

    name: str
    image_id: str
    labels: Mapping[str, str]
    options: tuple[str, ...] = ()  # --network, -e, -v, -p, --stop-timeout ...
    command: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """The arguments after ``<engine> run --detach``."""
        labels = itertools.chain.from_iterable(
            ("--label", f"{k}={v}") for k, v in sorted(self.labels.items())
        )
        return ["--name", self.name, *labels, *self.options, self.image_id, *self.command]


def read_manifest(image_dir: Path) -> tuple[str, list[str]]:
    """The config file and layer files a docker-archive folder's ``manifest.json`` names."""
    where = image_dir / IMAGE_MANIFEST
    try:
        body: Any = json.loads(where.read_bytes())
        entry = body[0]
        config, layers = str(entry["Config"]), [str(layer) for layer in entry["Layers"]]
    except FileNotFoundError as e:
        raise FormatError(f"{where} is missing: the slot holds no image") from e
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise FormatError(f"{where} is not a docker-archive manifest: {e!r}") from e
    if len(body) != 1:
        raise FormatError(f"{where} lists {len(body)} images; a release holds exactly one")
    return config, layers


def image_id_of(image_dir: Path) -> str:
    """The image ID: sha256 of the config file the manifest names."""
    config, _ = read_manifest(image_dir)
    h = hashlib.sha256()
    with safe_join(image_dir, config).open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ContainerEngine(ABC):
    @abstractmethod
    def image_exists(self, image_id: str) -> bool: ...

    @abstractmethod
    def remove_image(self, image_id: str) -> bool:
        """Remove an image no container uses; False when the engine keeps it (in use)."""

    @abstractmethod
    def load(self, image_dir: Path) -> str:
        """Load an extracted docker-archive folder; returns the image ID."""

    @abstractmethod
    def run(self, request: RunRequest) -> str:
        """Create and start a detached container; returns its ID."""

    @abstractmethod
    def inspect(self, name: str) -> ContainerInfo | None: ...

    @abstractmethod
    def remove(self, name: str, grace_s: float | None = None) -> None:
        """Stop (SIGTERM, SIGKILL after ``grace_s``; None: the container's own stop timeout)
        and remove; nothing happens when there is no such container."""

    @abstractmethod
    def start(self, name: str) -> None: ...

    @abstractmethod
    def logs(self, name: str, tail_lines: int) -> str: ...

    @abstractmethod
    def exec(self, name: str, argv: Sequence[str], timeout_s: float) -> ExecResult: ...

    @abstractmethod
    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """Containers (running or not) carrying all of ``labels``."""


def _tail(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text.strip()[-_TAIL_CHARS:]


def _is_missing(stderr: str) -> bool:
    low = stderr.lower()
    return any(m in low for m in _MISSING)


class CliEngine(ContainerEngine):
    """``podman`` or ``docker``: ``CliEngine("podman", ("--runtime", "runc"))``."""

    def __init__(
        self,
        executable: str = "podman",
        global_args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        command_timeout_s: float = 300.0,
    ) -> None:
        self.executable = executable
        self.global_args = tuple(global_args)
        self.env = dict(env or {})
        self.command_timeout_s = command_timeout_s

    def argv(self, args: Sequence[str]) -> list[str]:
        """The full command line of one engine command."""
        return [self.executable, *self.global_args, *args]

    def process_env(self) -> dict[str, str] | None:
        """The environment engine commands run with (None: the agent's own)."""
        # The engine needs PATH, HOME, XDG_RUNTIME_DIR ...: extra settings go on top.
        return {**os.environ, **self.env} if self.env else None

    def _call(
        self, args: Sequence[str], timeout_s: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one engine command; only a missing engine or a hang raises here."""
        argv = self.argv(args)
        timeout_s = timeout_s or self.command_timeout_s
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                stdin=subprocess.DEVNULL,
                env=self.process_env(),
                timeout=timeout_s,
                check=False,
            )
        except FileNotFoundError as e:
            raise self._not_installed() from e
        except subprocess.TimeoutExpired as e:
            raise ContainerEngineError(
                f"`{' '.join(argv)}` did not finish within {timeout_s:g} s"
            ) from e

    def _not_installed(self) -> ContainerEngineError:
        return ContainerEngineError(
            f"container engine {self.executable!r} is not installed (or not on PATH): "
            "install podman or docker, or configure the agent's container_engine"
        )

    def _run(
        self, args: Sequence[str], *, ok_if_missing: bool = False
    ) -> subprocess.CompletedProcess[str] | None:
        """Run one engine command; a failure raises, or (``ok_if_missing``) answers None
        when it failed only because there is no such container."""
        proc = self._call(args)
        if proc.returncode != 0:
            if ok_if_missing and _is_missing(proc.stderr):
                return None
            raise ContainerEngineError(
                f"`{' '.join(proc.args)}` failed with exit code {proc.returncode}: "
                f"{_tail(proc.stderr)}"
            )
        return proc

    def image_exists(self, image_id: str) -> bool:
        # `image exists` is podman only; `image inspect` answers the same on both engines.
        return self._call(["image", "inspect", "--format", "{{.Id}}", image_id]).returncode == 0

    def remove_image(self, image_id: str) -> bool:
        # Without --force: an image a container (running or not) still uses stays.
        return self._call(["rmi", image_id]).returncode == 0

    def load(self, image_dir: Path) -> str:
        config, layers = read_manifest(image_dir)
        image_id = image_id_of(image_dir)
        argv = self.argv(["load"])
        # Output goes to a file, not a pipe: an engine chatty on stderr cannot block while we
        # are still writing its stdin.
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=out, stderr=out, env=self.process_env()
                )
            except FileNotFoundError as e:
                raise self._not_installed() from e
            assert proc.stdin is not None
            try:
                _write_archive(proc.stdin, image_dir, [IMAGE_MANIFEST, config, *layers])
            except BrokenPipeError:
                pass  # the engine gave up reading: its exit code and output say why
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            try:
                code = proc.wait(timeout=self.command_timeout_s)
            except subprocess.TimeoutExpired as e:
                proc.kill()
                proc.wait()
                raise ContainerEngineError(f"`{' '.join(argv)}` did not finish in time") from e
            out.seek(0)
            said = _tail(out.read())
        if code != 0:
            raise ContainerEngineError(
                f"`{' '.join(argv)}` of {image_dir} failed with exit code {code}: {said}"
            )
        if not self.image_exists(image_id):
            raise ContainerEngineError(
                f"`{' '.join(argv)}` of {image_dir} succeeded but image {image_id[:12]} is not "
                f"there: is the config file in the manifest the image's config? ({said})"
            )
        return image_id

    def run(self, request: RunRequest) -> str:
        proc = self._run(["run", "--detach", *request.argv()])
        assert proc is not None
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

    def inspect(self, name: str) -> ContainerInfo | None:
        proc = self._run(["container", "inspect", name], ok_if_missing=True)
        if proc is None:
            return None
        try:
            body = json.loads(proc.stdout)
            if not body:
                return None
            return _container_info(body[0])
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ContainerEngineError(
                f"`{self.executable} container inspect {name}` printed something unexpected: {e!r}"
            ) from e

    def remove(self, name: str, grace_s: float | None = None) -> None:
        # -t: podman spells it --time, docker --timeout.
        stop = ["stop"] if grace_s is None else ["stop", "-t", str(math.ceil(grace_s))]
        with contextlib.suppress(ContainerEngineError):
            # A container that cannot be stopped is still removed (rm -f kills it) below.
            self._run([*stop, name], ok_if_missing=True)
        self._run(["rm", "--force", name], ok_if_missing=True)

    def start(self, name: str) -> None:
        self._run(["start", name])

    def logs(self, name: str, tail_lines: int) -> str:
        argv = self.argv(["logs", "--tail", str(tail_lines), name])
        try:
            proc = subprocess.run(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # the container's stderr is in there too
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env=self.process_env(),
                timeout=self.command_timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"(no logs: {e})"
        return proc.stdout

    def exec(self, name: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        cmd = self.argv(["exec", name, *argv])
        try:
            proc = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                env=self.process_env(),
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            return ExecResult(None, _tail(e.output or ""))
        except FileNotFoundError as e:
            raise self._not_installed() from e
        return ExecResult(proc.returncode, _tail(proc.stdout))

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        filters = itertools.chain.from_iterable(
            ("--filter", f"label={k}={v}") for k, v in sorted(labels.items())
        )
        proc = self._run(["ps", "--all", *filters, "--format", "{{.Names}}"])
        assert proc is not None
        found = (self.inspect(n) for n in proc.stdout.split())
        return [c for c in found if c is not None]  # one removed meanwhile is just gone


def _write_archive(stream: IO[bytes], root: Path, names: Sequence[str]) -> None:
    """Stream a tar of ``names`` (below ``root``) to ``stream``: nothing is held in memory."""
    with tarfile.open(fileobj=stream, mode="w|") as tar:
        for name in names:
            tar.add(safe_join(root, name), arcname=name, recursive=False)


def _container_info(d: Mapping[str, Any]) -> ContainerInfo:
    state = d["State"]
    return ContainerInfo(
        id=str(d["Id"]),
        name=str(d["Name"]).lstrip("/"),  # docker writes "/name"
        status=str(state["Status"]),
        running=bool(state["Running"]),
        exit_code=int(state.get("ExitCode") or 0),
        image_id=str(d["Image"]).removeprefix("sha256:"),
        labels={str(k): str(v) for k, v in (d["Config"].get("Labels") or {}).items()},
    )


@dataclass
class FakeContainer:
    id: str
    request: RunRequest
    running: bool = True
    exit_code: int = 0
    logs: list[str] = field(default_factory=list)

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            id=self.id,
            name=self.request.name,
            status="running" if self.running else "exited",
            running=self.running,
            exit_code=self.exit_code,
            image_id=self.request.image_id,
            labels=dict(self.request.labels),
        )


class FakeEngine(ContainerEngine):
    """In-memory engine. ``exec_exit(container, argv)`` decides what ``exec`` answers;
    ``on_run(container)`` may change a new container (e.g. make it exit at once)."""

    def __init__(
        self,
        *,
        exec_exit: Callable[[FakeContainer, Sequence[str]], int] = lambda _c, _a: 0,
        on_run: Callable[[FakeContainer], None] = lambda _c: None,
    ) -> None:
        self.images: set[str] = set()
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, str]] = []
        self.exec_exit = exec_exit
        self.on_run = on_run
        self._ids = itertools.count(1)

    def image_exists(self, image_id: str) -> bool:
        return image_id in self.images

    def remove_image(self, image_id: str) -> bool:
        if any(c.request.image_id == image_id for c in self.containers.values()):
            return False
        if image_id in self.images:
            self.images.discard(image_id)
            self.calls.append(("rmi", image_id))
        return True

    def load(self, image_dir: Path) -> str:
        image_id = image_id_of(image_dir)
        self.calls.append(("load", image_id))
        self.images.add(image_id)
        return image_id

    def run(self, request: RunRequest) -> str:
        if request.name in self.containers:
            raise ContainerEngineError(f"the container name {request.name!r} is already in use")
        if request.image_id not in self.images:
            raise ContainerEngineError(f"image {request.image_id} not known")
        c = FakeContainer(id=f"{next(self._ids):064x}", request=request)
        self.containers[request.name] = c
        self.calls.append(("run", request.name))
        self.on_run(c)
        return c.id

    def inspect(self, name: str) -> ContainerInfo | None:
        c = self.containers.get(name)
        return None if c is None else c.info()

    def remove(self, name: str, grace_s: float | None = None) -> None:
        if self.containers.pop(name, None) is not None:
            self.calls.append(("remove", name))

    def start(self, name: str) -> None:
        c = self.containers.get(name)
        if c is None:
            raise ContainerEngineError(f"no such container {name}")
        self.calls.append(("start", name))
        c.running, c.exit_code = True, 0

    def logs(self, name: str, tail_lines: int) -> str:
        c = self.containers.get(name)
        return "" if c is None else "".join(f"{line}\n" for line in c.logs[-tail_lines:])

    def exec(self, name: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        c = self.containers.get(name)
        if c is None or not c.running:
            return ExecResult(125, f"container {name} is not running")
        return ExecResult(self.exec_exit(c, argv), "")

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        return [
            c.info()
            for c in self.containers.values()
            if all(c.request.labels.get(k) == v for k, v in labels.items())
        ]

    def exit(self, name: str, code: int) -> None:
        """Make a running container exit (a crash)."""
        c = self.containers[name]
        c.running, c.exit_code = False, code
