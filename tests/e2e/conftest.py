"""Fixtures of the end-to-end tests: a real server seeded with a small fleet's history."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeota.procs import ProcessGroup
from edgeota.server.devcerts import make_dev_certificates
from harness import start_server
from seeding import Seeded, seed


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    certs = make_dev_certificates(tmp_path / "certs")
    with ProcessGroup() as procs:
        server = start_server(procs, tmp_path, certs, env={"EDGEOTA_ROLLOUT_INTERVAL_S": "0.3"})
        try:
            yield seed(server, tmp_path)
        finally:
            server.admin.close()
