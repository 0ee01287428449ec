"""Child processes that never outlive their parent's ``with`` block (demo, simulator, tests,
benchmarks), and the ``edgeota server`` they start."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from edgeota.server.devcerts import DevCertificates


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ProcessGroup:
    """Starts commands in sessions of their own and stops each whole session on exit.

    A child in its own session does not get the terminal's Ctrl-C directly; this group
    stops it (SIGTERM, then SIGKILL after a grace period) together with anything it started.
    """

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        log_file: Path,
        env: dict[str, str] | None = None,
        stdout: int | None = None,
    ) -> subprocess.Popen[bytes]:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log = log_file.open("ab")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=stdout if stdout is not None else log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        finally:
            log.close()
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Stop one child and its whole session."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=self.grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # The leader may be gone while members of its session linger: sweep them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            self.stop(proc)
        self._procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2, what: str = ""
) -> None:
    """Poll ``predicate`` until it holds; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def wait_healthy(
    url: str,
    timeout_s: float,
    verify: ssl.SSLContext | bool = True,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until ``url`` answers 200; fail early if ``proc`` exits first."""

    def ready() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {url} was up")
        try:
            return httpx.get(url, timeout=2.0, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout_s, what=url)


@dataclass(frozen=True)
class ServerProcess:
    """An ``edgeota server`` started by :func:`start_server`."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    verify: ssl.SSLContext | bool  # what its clients verify its certificate with


def start_server(
    procs: ProcessGroup,
    data_dir: Path,
    log_file: Path,
    *,
    env: dict[str, str] | None = None,
    port: int | None = None,
    certs: DevCertificates | None = None,
    timeout_s: float = 60.0,
) -> ServerProcess:
    """``edgeota server`` on 127.0.0.1 (HTTPS when ``certs`` are given), once its /healthz
    answers; RuntimeError with the end of its log when it exits or does not answer."""
    port = free_port() if port is None else port
    argv = [sys.executable, "-m", "edgeota", "server", "--data-dir", str(data_dir)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    verify: ssl.SSLContext | bool = True
    if certs is not None:
        argv += ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]
        verify = ssl.create_default_context(cafile=str(certs.ca_cert))
    url = f"{'https' if certs is not None else 'http'}://127.0.0.1:{port}"
    proc = procs.start(argv, log_file, env=env)
    try:
        wait_healthy(f"{url}/healthz", timeout_s, verify=verify, proc=proc)
    except (RuntimeError, TimeoutError) as e:
        tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
        raise RuntimeError(f"the server did not start: {e}\n--- {log_file} ---\n{tail}") from e
    return ServerProcess(url, port, proc, log_file, verify)
