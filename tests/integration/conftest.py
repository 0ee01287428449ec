"""Fixtures for integration tests: real processes on loopback, HTTPS with generated certs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeota.procs import ProcessGroup
from edgeota.server.devcerts import DevCertificates, make_dev_certificates
from harness import Fleet, ServerHandle, start_server


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCertificates:
    return make_dev_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1/, v2/ and v3-broken/ release folders of the digits denoiser."""
    from edgeota.modelops.digits import build_example_releases

    out = tmp_path_factory.mktemp("examples")
    build_example_releases(out)
    return out


@pytest.fixture
def server(tmp_path: Path, certs: DevCertificates) -> Iterator[ServerHandle]:
    with ProcessGroup() as procs:
        handle = start_server(procs, tmp_path, certs)
        try:
            yield handle
        finally:
            handle.admin.close()


@pytest.fixture
def fleet(server: ServerHandle, certs: DevCertificates, tmp_path: Path) -> Iterator[Fleet]:
    with ProcessGroup() as procs:
        yield Fleet(server=server, certs=certs, work=tmp_path, procs=procs)
