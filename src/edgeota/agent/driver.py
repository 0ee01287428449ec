"""Runtime drivers: start, stop and supervise the on-device inference service of one slot.

:class:`ProcessDriver` runs ``python -m edgeota.runtime.server`` as a child in its own
process group (so stopping it also stops anything it spawned), restarts it when it exits,
and calls it a crash loop when it exits more often than its restart budget allows within a
time window. :class:`FakeDriver` is the in-memory stand-in for tests.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import httpx

from edgeota.fsutil import atomic_write_text

RUNTIME_MODULE = "edgeota.runtime.server"


class HealthResult(Protocol):
    """The outcome of a runtime health check (edgeota.agent.health.HealthReport)."""

    @property
    def ok(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def figures(self) -> dict[str, float]: ...


HealthCheck = Callable[[str, Path, float], HealthResult]  # (base_url, slot_dir, timeout_s)


class RuntimeDriver(ABC):
    """One runtime serving one slot folder on ``base_url``."""

    @property
    @abstractmethod
    def base_url(self) -> str: ...

    @property
    @abstractmethod
    def slot_dir(self) -> Path | None:
        """The slot folder the runtime was started on, or None when stopped."""

    @property
    @abstractmethod
    def restart_count(self) -> int:
        """Unplanned restarts since the last :meth:`start`."""

    @abstractmethod
    def start(self, slot_dir: Path) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def wait_ready(self, timeout_s: float) -> bool:
        """True once the runtime answers; False on timeout or a crash loop."""

    @abstractmethod
    def crashed(self) -> bool:
        """True when the runtime exits repeatedly (its restart budget is spent)."""

    def restart(self, slot_dir: Path) -> None:
        self.stop()
        self.start(slot_dir)

    def supervise(self) -> None:
        """Restart the runtime if it exited (within the budget); call this periodically."""
        return  # drivers without a child process have nothing to supervise

    def last_output(self, max_chars: int = 400) -> str:
        """The end of what the runtime printed since its start: why it failed, usually."""
        return ""

    def forget(self, slot_dir: Path) -> None:
        """Free what the driver keeps for a slot about to be emptied (a container image)."""
        return  # a process runtime keeps nothing outside the slot


class ProcessDriver(RuntimeDriver):
    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        command: Sequence[str] | None = None,
        client: httpx.Client | None = None,
        restart_budget: int = 3,
        restart_window_s: float = 60.0,
        stop_grace_s: float = 5.0,
        poll_interval_s: float = 0.1,
        log_path: Path | None = None,
        pid_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.command = list(command or (sys.executable, "-m", RUNTIME_MODULE))
        self._client = client or httpx.Client()
        self.restart_budget = restart_budget
        self.restart_window_s = restart_window_s
        self.stop_grace_s = stop_grace_s
        self.poll_interval_s = poll_interval_s
        self.log_path = log_path
        self.pid_file = pid_file
        self._clock = clock
        self._proc: subprocess.Popen[bytes] | None = None
        self._slot_dir: Path | None = None
        self._exits: list[float] = []
        self._log_start = 0  # where this start's output begins in the log file
        self._restarts = 0
        self._crash_loop = False

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def slot_dir(self) -> Path | None:
        return self._slot_dir

    @property
    def restart_count(self) -> int:
        return self._restarts

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self, slot_dir: Path) -> None:
        self.stop()
        self._stop_stale(slot_dir.parent)
        self._slot_dir = slot_dir
        self._exits, self._restarts, self._crash_loop = [], 0, False
        try:
            self._log_start = 0 if self.log_path is None else self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_start = 0
        self._spawn()

    def last_output(self, max_chars: int = 400) -> str:
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(self._log_start, size - max_chars))
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def _spawn(self) -> None:
        assert self._slot_dir is not None
        argv = [
            *self.command,
            *("--slot-dir", str(self._slot_dir), "--host", self.host, "--port", str(self.port)),
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = subprocess.DEVNULL if self.log_path is None else self.log_path.open("ab")
        try:
            # Its own session: stop() signals the whole group, and a Ctrl-C meant for the
            # agent's terminal does not kill the runtime behind the agent's back.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        finally:
            if not isinstance(log, int):
                log.close()
        if self.pid_file is not None:
            atomic_write_text(self.pid_file, f"{self._proc.pid}\n")

    def stop(self) -> None:
        proc, self._proc, self._slot_dir = self._proc, None, None
        if proc is None:
            return  # never started here: a pid file is a stale runtime's, for start() to stop
        _stop_group(proc.pid, lambda t: _wait(proc, t), self.stop_grace_s)
        if self.pid_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()

    def _stop_stale(self, slots_folder: Path) -> None:
        """Stop runtimes left running by an agent that was killed (they hold our port): the
        one the pid file names, and any other running our command on a slot of this
        component, such as one started just before a kill, before its pid file was written."""
        stale = set(self._runtimes_on(slots_folder))
        if self.pid_file is not None:
            try:
                pid = int(self.pid_file.read_text("utf-8").strip())
                # Only a process that still runs our runtime command: pids get reused. The
                # port is not part of the test, so a runtime left on another port (an agent
                # restarted with a new --runtime-port) is stopped too.
                if _command_line(pid)[: len(self.command)] == self.command:
                    stale.add(pid)
            except (FileNotFoundError, ValueError):
                pass
        for pid in stale:
            _stop_group(pid, functools.partial(_wait_pid, pid), self.stop_grace_s)

    def _runtimes_on(self, slots_folder: Path) -> list[int]:
        """Processes running our runtime command on a slot folder inside ``slots_folder``."""
        running = running_runtimes(self.command)
        return [pid for pid, slot in running.items() if slot.parent == slots_folder]

    def supervise(self) -> None:
        proc = self._proc
        if proc is None or self._crash_loop or proc.poll() is None:
            return
        now = self._clock()
        self._exits = [t for t in self._exits if now - t < self.restart_window_s] + [now]
        if len(self._exits) > self.restart_budget:
            self._crash_loop = True
            return
        self._restarts += 1
        self._spawn()

    def crashed(self) -> bool:
        self.supervise()
        return self._crash_loop

    def wait_ready(self, timeout_s: float) -> bool:
        deadline = self._clock() + timeout_s
        while True:
            self.supervise()
            proc = self._proc
            if proc is None or self._crash_loop:
                return False
            try:
                resp = self._client.get(f"{self.base_url}/healthz", timeout=1.0)
                if resp.status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if self._clock() >= deadline:
                return False
            # Waiting on the child doubles as the pause between probes: an exit ends it early.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.poll_interval_s)


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


def running_runtimes(command: Sequence[str] | None = None) -> dict[int, Path]:
    """Every process running the runtime ``command`` (default: this Python's runtime
    module), by pid, with the slot folder it serves; empty where there is no ``/proc``."""
    prefix = list(command or (sys.executable, "-m", RUNTIME_MODULE))
    found: dict[int, Path] = {}
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return found
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        args = _command_line(int(entry.name))
        if args[: len(prefix)] != prefix or "--slot-dir" not in args:
            continue
        at = args.index("--slot-dir") + 1
        if at < len(args):
            found[int(entry.name)] = Path(args[at])
    return found


def _command_line(pid: int) -> list[str]:
    """The process's arguments; [] when it is gone or not ours to read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    parts = raw.split(b"\0")
    if parts and not parts[-1]:
        parts.pop()  # the terminating NUL
    return [a.decode(errors="replace") for a in parts]


def _wait_pid(pid: int, timeout_s: float) -> bool:
    """Wait for a process that is not our child (no waitpid possible) to exit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        # A pidfd becomes readable when the process exits: an event, not a polling loop.
        return bool(select.select([fd], [], [], timeout_s)[0])
    finally:
        os.close(fd)


def _stop_group(pid: int, wait: Callable[[float], bool], grace_s: float) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    if not wait(grace_s):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        wait(grace_s)
    else:
        # The leader is gone; anything it left behind in the group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


class FakeDriver(RuntimeDriver):
    """In-memory driver: ``ready`` and ``crash_loop`` decide per slot folder what happens."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:9",
        *,
        ready: Callable[[Path], bool] = lambda _slot: True,
        crash_loop: Callable[[Path], bool] = lambda _slot: False,
    ) -> None:
        self._base_url = base_url
        self._ready = ready
        self._crash_loop = crash_loop
        self._slot_dir: Path | None = None
        self.calls: list[tuple[str, Path | None]] = []

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def slot_dir(self) -> Path | None:
        return self._slot_dir

    @property
    def restart_count(self) -> int:
        return 0

    def start(self, slot_dir: Path) -> None:
        self._slot_dir = slot_dir
        self.calls.append(("start", slot_dir))

    def stop(self) -> None:
        self.calls.append(("stop", self._slot_dir))
        self._slot_dir = None

    def wait_ready(self, timeout_s: float) -> bool:
        slot = self._slot_dir
        return slot is not None and not self._crash_loop(slot) and self._ready(slot)

    def crashed(self) -> bool:
        return self._slot_dir is not None and self._crash_loop(self._slot_dir)
