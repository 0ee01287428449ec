"""Real servers, agents and runtime services on loopback (servers over HTTPS with generated
certificates)."""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from edgeota.adminclient import AdminClient
from edgeota.procs import ProcessGroup, free_port
from edgeota.procs import start_server as procs_start_server
from edgeota.server.devcerts import DevCertificates


@dataclass
class ServerHandle:
    url: str
    data_dir: Path
    admin: AdminClient
    ca: Path
    root: Path
    process: subprocess.Popen[bytes]
    log: Path
    admin_token: str = ""
    port: int = 0

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass
class Fleet:
    """Starts agents (as real processes) against one server; stops all of them at the end."""

    server: ServerHandle
    certs: DevCertificates
    work: Path
    procs: ProcessGroup
    group: str = "lab"
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def agent_argv(self, data_dir: Path, *extra: str, enroll: bool = True) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "edgeota",
            "agent",
            "--server",
            self.server.url,
            "--data-dir",
            str(data_dir),
            "--root",
            str(self.server.root),
            "--ca",
            str(self.certs.ca_cert),
            "--name",
            data_dir.name,
            "--hardware-class",
            "x86-64-test",
            "--runtime-port",
            str(free_port()),
            "--poll-interval",
            "0.5",
        ]
        if enroll and not (data_dir / "identity.json").exists():
            argv += ["--enroll-token", self.server.admin.enrollment_token([self.group])]
        return [*argv, *extra]

    def start_agent(self, data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
        proc = self.procs.start(
            self.agent_argv(data_dir, *extra), self.work / f"{data_dir.name}.log"
        )
        self.started.append(proc)
        return proc


def start_server(
    procs: ProcessGroup,
    work: Path,
    certs: DevCertificates,
    env: dict[str, str] | None = None,
    *,
    port: int | None = None,
    token: str | None = None,
) -> ServerHandle:
    """A server process on ``work / "server"``; ``env`` adds ``EDGEOTA_*`` settings.

    To restart a server on its data dir, pass the old handle's ``port`` and ``admin_token``:
    agents keep their URL, and the admin token (made on the first start only) stays valid.
    """
    data_dir = work / "server"
    token = "eoa_" + secrets.token_urlsafe(32) if token is None else token
    server = procs_start_server(
        procs,
        data_dir,
        work / "server.log",
        env={
            "EDGEOTA_BOOTSTRAP_ADMIN_TOKEN": token.removeprefix("eoa_"),
            "EDGEOTA_POLL_INTERVAL_S": "1",
            **(env or {}),
        },
        port=port,
        certs=certs,
    )
    return ServerHandle(
        url=server.url,
        data_dir=data_dir,
        admin=AdminClient(server.url, token, certs.ca_cert),
        ca=certs.ca_cert,
        root=data_dir / "tuf" / "metadata" / "1.root.json",
        process=server.process,
        log=server.log,
        admin_token=token,
        port=server.port,
    )


def wait_until_healthy(proc: subprocess.Popen[bytes], ready_file: Path, timeout_s: float) -> str:
    """A runtime service's URL once its ready file names a port whose /healthz answers;
    fails the test when the process exits first or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()
        if ready_file.exists():
            url = f"http://127.0.0.1:{json.loads(ready_file.read_text())['port']}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    pytest.fail(f"runtime did not become healthy within {timeout_s} s")
