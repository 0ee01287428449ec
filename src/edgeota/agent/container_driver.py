"""Run a container component (an OCI image + ``container.json``) with podman or docker.

A container component's slot holds ``container.json`` (:mod:`edgeota.containerspec`), the
image as an extracted docker-archive in ``image/`` and ``edgeota-slot.json``. One component
has at most two containers, named ``<prefix><component>`` (serving) and
``<prefix><component>-candidate``, labelled with the component, release, version, slot
folder and role, so a restarted agent finds them again.

Starting a slot (``start`` and ``restart``, which never stops anything first)::

    load the image unless the engine has it
    serving container already runs this slot's release?  -> adopt it, restart nothing
    run the candidate beside it (on staging_port) -> health check (http GET or exec)
      fails:  remove the candidate; the serving container is untouched; wait_ready() is
              False and last_output() says why (health figures + the candidate's log tail)
      passes: remove the old serving container and the candidate, run the new serving
              container on port; wait_ready() health-checks it there

Rolling back is starting the previous slot: its container still serves (adopted), or was
removed and is checked as a candidate again. ``supervise`` starts an exited serving
container again within a restart budget, like :class:`~edgeota.agent.driver.ProcessDriver`.

Nothing here raises for a sick container or engine: ``start``, ``stop`` and ``supervise``
record an :class:`~edgeota.errors.EdgeotaError` (including
:class:`~edgeota.agent.engine.ContainerEngineError`, e.g. podman missing) or ``OSError``, and
``wait_ready`` answers False with ``last_output`` explaining.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgeota.agent.driver import RuntimeDriver
from edgeota.agent.engine import (
    ContainerEngine,
    ContainerEngineError,
    ContainerInfo,
    RunRequest,
    image_id_of,
)
from edgeota.agent.health import HealthReport
from edgeota.containerspec import IMAGE_DIR, PORT_PLACEHOLDER, SPEC_FILE, ContainerSpec, parse_spec
from edgeota.errors import EdgeotaError
from edgeota.slotinfo import SlotInfo

DEFAULT_PREFIX = "edgeota-"
LABEL_COMPONENT = "edgeota.component"
LABEL_RELEASE = "edgeota.release_id"
LABEL_VERSION = "edgeota.version"
LABEL_SLOT = "edgeota.slot"
LABEL_ROLE = "edgeota.role"
SERVING, CANDIDATE = "serving", "candidate"
_UNPUBLISHED = ("host", "none")


@dataclass(frozen=True)
class Slot:
    """What one slot folder says: its release and its container settings."""

    path: Path
    info: SlotInfo
    spec: ContainerSpec

    @classmethod
    def read(cls, path: Path) -> Slot:
        spec = parse_spec((path / SPEC_FILE).read_bytes(), where=str(path / SPEC_FILE))
        return cls(path, SlotInfo.read(path), spec)


def fill_port(text: str, port: int | None) -> str:
    """``{port}`` becomes the port the container listens on (left as is without one)."""
    return text if port is None else text.replace(PORT_PLACEHOLDER, str(port))


def run_request(
    slot: Slot, *, name: str, role: str, port: int | None, image_id: str, components_root: Path
) -> RunRequest:
    """The ``run`` of ``slot``'s container as ``role``, listening on ``port``."""
    spec = slot.spec
    options = ["--network", spec.network]
    for key, value in spec.env.items():
        options += ["-e", f"{key}={fill_port(value, port)}"]
    for m in spec.mounts:
        options += ["-v", f"{m.source}:{m.target}" + (":ro" if m.read_only else "")]
    for mm in spec.model_mounts:
        options += ["-v", f"{components_root / mm.component}:{mm.target}:ro"]
    if port is not None and spec.network not in _UNPUBLISHED:
        options += ["-p", f"127.0.0.1:{port}:{spec.container_port}"]
    options += ["--stop-timeout", str(math.ceil(spec.stop_timeout_s))]
    labels = {
        LABEL_COMPONENT: slot.info.component,
        LABEL_RELEASE: slot.info.release_id,
        LABEL_VERSION: slot.info.version,
        LABEL_SLOT: str(slot.path.absolute()),
        LABEL_ROLE: role,
    }
    command = tuple(fill_port(a, port) for a in spec.command or ())
    return RunRequest(name, image_id, labels, tuple(options), command)


class ContainerDriver(RuntimeDriver):
    def __init__(
        self,
        component: str,
        engine: ContainerEngine,
        components_root: Path,
        *,
        prefix: str = DEFAULT_PREFIX,
        client: httpx.Client | None = None,
        restart_budget: int = 3,
        restart_window_s: float = 60.0,
        poll_interval_s: float = 0.2,
        log_lines: int = 20,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if any(c in str(components_root) for c in ":,"):
            raise ValueError(
                f"{components_root} cannot be mounted into containers: it contains ':' or ','"
            )
        self.component, self.engine = component, engine
        self.components_root = components_root.absolute()  # -v takes a relative one for a volume
        self.serving_name = f"{prefix}{component}"
        self.candidate_name = f"{prefix}{component}-{CANDIDATE}"
        self._client = client or httpx.Client()
        self.restart_budget, self.restart_window_s = restart_budget, restart_window_s
        self.poll_interval_s, self.log_lines = poll_interval_s, log_lines
        self._clock, self._sleep = clock, sleep
        self._serving: Slot | None = None  # the slot the serving container runs
        self._base_url = ""
        self._failure: str | None = None  # why the last start failed
        self._note: str | None = None  # the last thing supervision or wait_ready noticed
        self._exits: list[float] = []
        self._restarts = 0
        self._crash_loop = False

    # -- RuntimeDriver -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the served (or last started) slot; "" without port."""
        return self._base_url

    @property
    def slot_dir(self) -> Path | None:
        return None if self._serving is None else self._serving.path

    @property
    def restart_count(self) -> int:
        return self._restarts

    def start(self, slot_dir: Path) -> None:
        self._failure = self._note = None
        self._exits, self._restarts, self._crash_loop = [], 0, False
        try:
            self._start(slot_dir)
        except (EdgeotaError, OSError) as e:
            self._failure = f"cannot run {self.component} from {slot_dir}: {e}"
            with contextlib.suppress(EdgeotaError):
                self.engine.remove(self.candidate_name, grace_s=0)

    def restart(self, slot_dir: Path) -> None:
        # No stop first: the old container serves until the new one has proved healthy.
        self.start(slot_dir)

    def stop(self) -> None:
        self._serving = None
        try:
            self.engine.remove(self.candidate_name, grace_s=0)
            self.engine.remove(self.serving_name)
        except EdgeotaError as e:
            self._note = f"cannot remove {self.serving_name}: {e}"

    def wait_ready(self, timeout_s: float) -> bool:
        if self._failure is not None:
            return False
        self.supervise()
        slot = self._serving
        if slot is None or self._crash_loop:
            return False
        report = self._check(self.serving_name, slot.spec, slot.spec.port, timeout_s)
        if not report.ok:
            self._note = report.reason
        return report.ok

    def supervise(self) -> None:
        slot = self._serving
        if slot is None or self._crash_loop:
            return
        try:
            c = self.engine.inspect(self.serving_name)
            if c is not None and (c.running or c.status == "paused"):
                return
            now = self._clock()
            self._exits = [t for t in self._exits if now - t < self.restart_window_s] + [now]
            gone = "was removed" if c is None else f"exited with code {c.exit_code}"
            self._note = f"{self.serving_name} {gone}"
            if len(self._exits) > self.restart_budget:
                self._crash_loop = True
                self._note += (
                    f", {len(self._exits)} times within {self.restart_window_s:g} s: crash loop"
                )
                return
            self._restarts += 1
            if c is None:
                self._run(slot, self.serving_name, SERVING, slot.spec.port)
            else:
                self.engine.start(self.serving_name)
        except (EdgeotaError, OSError) as e:
            self._note = f"cannot supervise {self.serving_name}: {e}"

    def crashed(self) -> bool:
        self.supervise()
        return self._crash_loop

    def last_output(self, max_chars: int = 400) -> str:
        if self._failure is not None:
            return _clip(self._failure, max_chars)
        logs = self.engine.logs(self.serving_name, self.log_lines) if self._serving else ""
        lines = [line.strip() for line in logs.splitlines() if line.strip()]
        said = " | ".join(lines[-3:])
        return _clip("; ".join(p for p in (self._note, said) if p), max_chars)

    def forget(self, slot_dir: Path) -> None:
        """Remove the slot's image from the engine unless a container of ours uses it, so
        images do not pile up update after update (the slot itself is about to be emptied)."""
        try:
            image_id = image_id_of(slot_dir / IMAGE_DIR)
            in_use = {
                c.image_id
                for c in map(self.engine.inspect, (self.serving_name, self.candidate_name))
                if c is not None
            }
            if image_id not in in_use and not self.engine.remove_image(image_id):
                self._note = f"image {image_id[:12]} of {slot_dir} is still in use; kept"
        except (EdgeotaError, OSError):
            return  # nothing (readable) in the slot, or no engine: nothing to free

    # -- the health check the agent runs after wait_ready -------------------------------
    def health(self, base_url: str, slot_dir: Path, timeout_s: float) -> HealthReport:
        """The container.json health check of the serving container (an agent HealthCheck)."""
        slot = self._serving
        if slot is None or slot.path != slot_dir:
            return HealthReport(False, f"{self.serving_name} does not run {slot_dir}")
        return self._check(self.serving_name, slot.spec, slot.spec.port, timeout_s)

    # -- the update ---------------------------------------------------------------------
    def _start(self, slot_dir: Path) -> None:
        slot = Slot.read(slot_dir)
        port = slot.spec.port
        self._base_url = "" if port is None else f"http://127.0.0.1:{port}"
        image_id = self._ensure_image(slot_dir / IMAGE_DIR)
        serving = self.engine.inspect(self.serving_name)
        if serving is not None and serving.running and _runs(serving, slot, image_id):
            self._serving = slot  # adopted: e.g. the agent restarted, or a rollback
            return
        self.engine.remove(self.candidate_name, grace_s=0)  # left by an interrupted update
        self._run(slot, self.candidate_name, CANDIDATE, slot.spec.staging_port, image_id)
        report = self._check(
            self.candidate_name, slot.spec, slot.spec.staging_port, slot.spec.health.timeout_s
        )
        if not report.ok:
            said = self.engine.logs(self.candidate_name, self.log_lines).strip()
            self.engine.remove(self.candidate_name, grace_s=0)
            self._serving = self._still_serving(serving)
            self._failure = (
                f"the candidate container of {slot.info.component} {slot.info.version} "
                f"failed its health check: {report.reason}; the old container keeps serving"
                + (f"; candidate output: {' | '.join(said.splitlines()[-5:])}" if said else "")
            )
            return
        self._serving = None
        self.engine.remove(self.serving_name)  # SIGTERM, its own stop timeout, then gone
        self.engine.remove(self.candidate_name)
        self._run(slot, self.serving_name, SERVING, port, image_id)
        self._serving = slot

    def _ensure_image(self, image_dir: Path) -> str:
        image_id = image_id_of(image_dir)
        if not self.engine.image_exists(image_id):
            loaded = self.engine.load(image_dir)
            if loaded != image_id:
                raise ContainerEngineError(
                    f"loading {image_dir} gave image {loaded}, not {image_id}: "
                    "the manifest names a config that is not the image's"
                )
        return image_id

    def _run(
        self, slot: Slot, name: str, role: str, port: int | None, image_id: str | None = None
    ) -> None:
        req = run_request(
            slot,
            name=name,
            role=role,
            port=port,
            image_id=image_id or image_id_of(slot.path / IMAGE_DIR),
            components_root=self.components_root,
        )
        self.engine.run(req)

    def _still_serving(self, serving: ContainerInfo | None) -> Slot | None:
        """The slot of the serving container a failed candidate left in place."""
        if serving is None or not serving.running or LABEL_SLOT not in serving.labels:
            return None
        try:
            return Slot.read(Path(serving.labels[LABEL_SLOT]))
        except (EdgeotaError, OSError):
            return None

    # -- health -------------------------------------------------------------------------
    def _check(
        self, name: str, spec: ContainerSpec, port: int | None, timeout_s: float
    ) -> HealthReport:
        """Probe ``name`` until it is healthy, it exits, or ``timeout_s`` passes."""
        started = self._clock()
        deadline = started + timeout_s
        attempts = 0
        while True:
            attempts += 1
            # At least a second per probe: one cut short at the deadline would only say
            # "timed out" and hide the answer that explains the failure.
            ok, detail = self._probe(name, spec, port, max(deadline - self._clock(), 1.0))
            elapsed = self._clock() - started
            figures = {"health_s": round(elapsed, 3), "health_attempts": float(attempts)}
            if ok:
                return HealthReport(True, None, figures)
            c = self.engine.inspect(name)
            if c is None or not c.running:
                why = "is gone" if c is None else f"exited with code {c.exit_code}"
                return HealthReport(False, f"{name} {why} ({detail})", figures)
            if self._clock() >= deadline:
                return HealthReport(
                    False,
                    f"{name} was not healthy within {timeout_s:g} s "
                    f"({attempts} attempts; last: {detail})",
                    figures,
                )
            self._sleep(self.poll_interval_s)

    def _probe(
        self, name: str, spec: ContainerSpec, port: int | None, timeout_s: float
    ) -> tuple[bool, str]:
        health = spec.health
        if health.exec is not None:
            argv = [fill_port(a, port) for a in health.exec]
            result = self.engine.exec(name, argv, min(timeout_s, 10.0))
            if result.exit_code is None:
                return False, f"exec {argv[0]} timed out"
            said = f": {result.output.splitlines()[-1]}" if result.output.strip() else ""
            return result.exit_code == 0, f"exec {argv[0]} exited with {result.exit_code}{said}"
        url = f"http://127.0.0.1:{port}{health.http}"
        try:
            resp = self._client.get(url, timeout=min(timeout_s, 2.0))
        except httpx.HTTPError as e:
            return False, f"GET {url}: {type(e).__name__}"
        ok = resp.status_code == health.expect_status
        return ok, f"GET {url} answered {resp.status_code} (expected {health.expect_status})"


def _runs(c: ContainerInfo, slot: Slot, image_id: str) -> bool:
    """Whether container ``c`` runs ``slot``'s release from ``slot``'s folder."""
    want = {
        LABEL_COMPONENT: slot.info.component,
        LABEL_RELEASE: slot.info.release_id,
        LABEL_SLOT: str(slot.path.absolute()),
    }
    return c.image_id == image_id and all(c.labels.get(k) == v for k, v in want.items())


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
