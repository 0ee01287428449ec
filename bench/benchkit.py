"""What the benches that drive a real server and agent share: an HTTPS server on loopback
with a known admin token, and the command line of an agent enrolled in one group."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeota.adminclient import AdminClient
from edgeota.procs import ProcessGroup, start_server
from edgeota.server.devcerts import DevCertificates, make_dev_certificates


@dataclass(frozen=True)
class BenchServer:
    url: str
    admin: AdminClient
    certs: DevCertificates
    root: Path  # the trusted root the agents pin

    def agent_argv(
        self, data_dir: Path, name: str, runtime_port: int, groups: list[str], *extra: str
    ) -> list[str]:
        """``edgeota agent`` on ``data_dir``, enrolling (once) into ``groups``."""
        token = self.admin.enrollment_token(groups, 30 * 86400)
        return [
            *(sys.executable, "-m", "edgeota", "agent", "--server", self.url),
            *("--data-dir", str(data_dir), "--root", str(self.root)),
            *("--ca", str(self.certs.ca_cert), "--name", name),
            *("--runtime-port", str(runtime_port), "--local-api-port", "0"),
            *("--enroll-token", token),
            *extra,
        ]


@contextmanager
def https_server(procs: ProcessGroup, work: Path) -> Iterator[BenchServer]:
    """A server on ``work / "server"`` telling devices to poll every second."""
    certs = make_dev_certificates(work / "certs")
    secret = secrets.token_urlsafe(32)
    url = start_server(
        procs,
        work / "server",
        work / "server.log",
        env={"EDGEOTA_BOOTSTRAP_ADMIN_TOKEN": secret, "EDGEOTA_POLL_INTERVAL_S": "1"},
        certs=certs,
    ).url
    with AdminClient(url, f"eoa_{secret}", certs.ca_cert) as admin:
        root = work / "server" / "tuf" / "metadata" / "1.root.json"
        yield BenchServer(url, admin, certs, root)
