"""The device's TrustClient: target lookup, the signed custom field, error mapping."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tuf.api import exceptions as tuf_errors

from edgeota.errors import (
    FormatError,
    HTTPStatusError,
    PolicyError,
    TransportError,
    VerificationError,
)
from edgeota.targets import TargetCustom, VerifiedTarget
from edgeota.trust import TargetVerifier, TrustClient
from edgeota.trust.testing import METADATA_URL, TARGETS_URL, RepositorySimulator

MODEL = "denoiser/2.0.0/model.onnx"


@pytest.fixture
def sim(tmp_path: Path) -> RepositorySimulator:
    return RepositorySimulator(tmp_path / "server")


@pytest.fixture
def http(sim: RepositorySimulator) -> Iterator[httpx.Client]:
    with sim.http_client() as client:
        yield client


def test_custom_field_parsed(sim: RepositorySimulator, http: httpx.Client, tmp_path: Path) -> None:
    custom = TargetCustom(
        component="denoiser",
        version="2.0.0",
        release_id="rel-3f1c",
        role="model",
        file="model.onnx",
        variant="int8",
        hardware=("x86_64-cpu",),
        needs={"app": ">=2.1.0"},
    )
    data = b"onnx bytes"
    sim.publish(MODEL, data, custom.to_custom())

    target = sim.trust_client(tmp_path / "device", http).get_target(MODEL)

    sha256 = hashlib.sha256(data).hexdigest()
    assert target == VerifiedTarget(
        path=MODEL,
        length=len(data),
        sha256=sha256,
        custom=custom,
        url=f"{TARGETS_URL}/denoiser/2.0.0/{sha256}.model.onnx",
    )
    assert http.get(target.url).content == data


def test_target_without_edgeota_custom_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    sim.publish("other/1.0.0/blob.bin", b"not ours", custom={"vendor": {"x": 1}})
    with pytest.raises(FormatError, match=r"'other/1\.0\.0/blob\.bin'.*no 'edgeota' custom field"):
        sim.trust_client(tmp_path / "device", http).get_target("other/1.0.0/blob.bin")


def test_unknown_target_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    sim.publish_release_file("denoiser", "2.0.0", "model.onnx", b"x")
    with pytest.raises(PolicyError, match="not listed in the signed targets metadata"):
        sim.trust_client(tmp_path / "device", http).get_target("denoiser/9.9.9/model.onnx")


@pytest.mark.parametrize("path", ["../etc/passwd", "/abs/model.onnx", "a/../../b", ""])
def test_unsafe_target_path_refused(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path, path: str
) -> None:
    client = sim.trust_client(tmp_path / "device", http)
    with pytest.raises(PolicyError, match="unsafe path"):
        client.get_target(path)
    assert sim.requests == []  # refused before any request


def test_persisted_metadata_used_without_bootstrap(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    sim.repo.rotate_root_key(sim.root_key_dir)
    sim.publish_release_file("denoiser", "2.0.0", "model.onnx", b"x")
    sim.trust_client(tmp_path / "device", http).refresh()
    seen = len(sim.requests)

    restarted = TrustClient(tmp_path / "device", METADATA_URL, TARGETS_URL, http, None)
    assert restarted.get_target(MODEL).length == 1
    # Root v2 came from the local copy; only the probe for v3 went to the server.
    assert sim.requests[seen:] == ["/tuf/metadata/3.root.json", "/tuf/metadata/timestamp.json"]


def test_client_without_trusted_root_refused(tmp_path: Path) -> None:
    with httpx.Client() as http, pytest.raises(ValueError, match="bootstrap_root"):
        TrustClient(tmp_path / "device", METADATA_URL, TARGETS_URL, http, None)


def test_missing_metadata_is_http_status_error(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    (sim.metadata_dir / "timestamp.json").unlink()
    with pytest.raises(HTTPStatusError) as excinfo:
        sim.trust_client(tmp_path / "device", http).refresh()
    assert excinfo.value.status_code == 404
    assert isinstance(excinfo.value.__cause__, tuf_errors.DownloadHTTPError)


def test_network_failure_is_transport_error(sim: RepositorySimulator, tmp_path: Path) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(unreachable)) as http:
        client = sim.trust_client(tmp_path / "device", http)
        with pytest.raises(TransportError, match=r"2\.root\.json.*connection refused") as excinfo:
            client.refresh()
    assert not isinstance(excinfo.value, HTTPStatusError)
    assert isinstance(excinfo.value.__cause__, tuf_errors.DownloadError)


def test_unparsable_metadata_is_format_error(
    sim: RepositorySimulator, http: httpx.Client, tmp_path: Path
) -> None:
    sim.serve("timestamp.json", b"{not json")
    with pytest.raises(FormatError, match="refused"):
        sim.trust_client(tmp_path / "device", http).refresh()


def test_target_longer_than_signed_length_stops_at_cap() -> None:
    data = b"0123456789"
    target = VerifiedTarget(
        path=MODEL,
        length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        custom=TargetCustom("denoiser", "2.0.0", "rel-1", "model", "model.onnx"),
        url="https://tuf.test/x",
    )
    verifier = TargetVerifier(target)
    verifier.update(data[:6])
    verifier.update(data[6:])
    verifier.finish()

    endless = TargetVerifier(target)
    endless.update(data)
    with pytest.raises(VerificationError, match="expected 10 bytes, got at least 11"):
        endless.update(b"x")

    short = TargetVerifier(target)
    short.update(data[:9])
    with pytest.raises(VerificationError, match="expected 10 bytes, got 9"):
        short.finish()
