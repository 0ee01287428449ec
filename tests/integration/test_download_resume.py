"""Resumable, verified downloads against a real HTTP server on 127.0.0.1 that misbehaves.

Rows 7, 8, 12 and 13 of RELIABILITY.md: every case ends with the exact signed bytes or a
clean error, and never with wrong bytes appended to a partial file.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.agent.diskspace import NotEnoughSpaceError
from edgeota.agent.download import (
    DeadlineExceededError,
    Downloader,
    DownloadLimits,
    SlowRetrievalError,
)
from edgeota.errors import HTTPStatusError, TransportError, VerificationError
from edgeota.targets import TargetCustom, VerifiedTarget

pytestmark = pytest.mark.integration

DATA = random.Random(7).randbytes(200_000)


@dataclass
class Fault:
    """What the server does to one request (consumed in order; then it behaves)."""

    kind: str  # cut | ignore_range | wrong_range | new_etag | endless | too_long | drip | 503
    at: int = 0  # for cut: bytes of the body sent before the connection is cut


@dataclass
class FileServer:
    data: bytes
    etag: str = '"v1"'
    faults: list[Fault] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    url: str = ""


def _handler(fs: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            fault = fs.faults.pop(0) if fs.faults else Fault("none")
            rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
            fs.log.append({"range": rng, "if_range": if_range, "fault": fault.kind})
            if fault.kind == "new_etag":
                fs.etag = f'"v{len(fs.log) + 1}"'
            if fault.kind == "503":
                self._head(503, {"Content-Length": "0"})
                return
            if fault.kind == "endless":
                self._head(200, {"Connection": "close"})  # close-delimited, no length
                self.close_connection = True
                self._write_forever()
                return
            start = 0
            if rng and fault.kind != "ignore_range" and (if_range in (None, fs.etag)):
                start = int(rng.removeprefix("bytes=").rstrip("-"))
            body = fs.data[start:]
            headers = {"Content-Length": str(len(body)), "Accept-Ranges": "bytes"}
            if fault.kind == "too_long":
                body += b"x" * 1000
                headers["Content-Length"] = str(len(body))
            status = 206 if start else 200
            if start:
                first = start + 10 if fault.kind == "wrong_range" else start
                headers["Content-Range"] = f"bytes {first}-{len(fs.data) - 1}/{len(fs.data)}"
            self._head(status, headers)
            if fault.kind == "cut":
                self._send(body[: fault.at])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # TCP cut mid-body
                self.close_connection = True
            elif fault.kind == "drip":
                self._drip(body)
            else:
                self._send(body)

        def _head(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("ETag", fs.etag)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()

        def _send(self, chunk: bytes) -> None:
            self.wfile.write(chunk)

        def _drip(self, body: bytes) -> None:
            try:
                for i in range(len(body)):
                    if fs.stop.wait(0.02):  # the fault itself: one byte every 20 ms
                        return
                    self._send(body[i : i + 1])
            except OSError:
                pass  # the client gave up on us: what it should do

        def _write_forever(self) -> None:
            try:
                self._send(fs.data)
                while not fs.stop.is_set():
                    self._send(b"\0" * 65536)
            except OSError:
                pass  # the client hung up: what it should do

    return Handler


@pytest.fixture
def server() -> Iterator[FileServer]:
    fs = FileServer(DATA)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fs))
    httpd.daemon_threads = True
    fs.url = f"http://127.0.0.1:{httpd.server_address[1]}/c/1.0.0/{hashlib.sha256(DATA).hexdigest()}.model.bin"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield fs
    fs.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def target(fs: FileServer, data: bytes = DATA) -> VerifiedTarget:
    custom = TargetCustom("c", "1.0.0", "rel-1", "model", "model.bin")
    return VerifiedTarget(
        "c/1.0.0/model.bin", len(data), hashlib.sha256(data).hexdigest(), custom, fs.url
    )


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client() as c:
        yield c


def downloader(client: httpx.Client, tmp_path: Path, **limits: Any) -> Downloader:
    base: dict[str, Any] = {"max_attempts": 4, "backoff_initial_s": 0.0, "read_timeout_s": 5.0}
    return Downloader(client, tmp_path / "downloads", DownloadLimits(**{**base, **limits}))


def assert_complete(path: Path) -> None:
    assert path.read_bytes() == DATA
    assert not any(p.name.endswith((".partial", ".validator")) for p in path.parent.iterdir())


@pytest.mark.parametrize("seed", range(5))
def test_cut_connection_at_random_offsets_resumes(
    server: FileServer, client: httpx.Client, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(DATA)), 2))
    # two cuts: the first at cuts[0]; the resumed request is cut again further on
    server.faults = [Fault("cut", cuts[0]), Fault("cut", cuts[1] - cuts[0])]
    path = downloader(client, tmp_path).fetch(target(server))
    assert_complete(path)
    assert [e["range"] for e in server.log] == [None, f"bytes={cuts[0]}-", f"bytes={cuts[1]}-"]
    assert server.log[1]["if_range"] == '"v1"'


def test_server_ignoring_range_restarts_from_zero(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    server.faults = [Fault("cut", 50_000), Fault("ignore_range")]
    assert_complete(downloader(client, tmp_path).fetch(target(server)))
    assert server.log[1]["range"] == "bytes=50000-"  # asked to resume, got a 200


def test_wrong_content_range_discards_the_partial(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    server.faults = [Fault("cut", 60_000), Fault("wrong_range")]
    assert_complete(downloader(client, tmp_path).fetch(target(server)))
    # the wrong 206 was not appended: the next request started over without Range
    assert [e["range"] for e in server.log] == [None, "bytes=60000-", None]


def test_changed_etag_fails_if_range_and_restarts(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    server.faults = [Fault("cut", 70_000), Fault("new_etag")]
    assert_complete(downloader(client, tmp_path).fetch(target(server)))
    assert server.log[1]["if_range"] == '"v1"'  # If-Range failed: a full 200 came back
    assert len(server.log) == 2


def test_endless_data_stops_at_the_signed_length(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    """Row 7: a body with no length that never ends is cut off at the cap."""
    server.faults = [Fault("endless")]
    seen: list[int] = []
    d = Downloader(
        client,
        tmp_path / "downloads",
        DownloadLimits(max_attempts=1),
        on_progress=lambda p: seen.append(p.received),
    )
    # The server never stops sending: returning at all means the client hung up.
    with pytest.raises(VerificationError, match="more than the 200000 bytes"):
        d.fetch(target(server))
    assert max(seen) <= len(DATA)  # nothing past the cap was written
    assert list((tmp_path / "downloads").iterdir()) == []


def test_declared_length_over_the_cap_is_refused_unread(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    server.faults = [Fault("too_long")]
    with pytest.raises(VerificationError, match="declares 201000 bytes"):
        downloader(client, tmp_path).fetch(target(server))
    assert list((tmp_path / "downloads").iterdir()) == []


def test_drip_feed_under_the_minimum_throughput_fails(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    """Row 8: each read arrives well within the read timeout, but far too slowly."""
    server.faults = [Fault("drip"), Fault("drip")]
    d = downloader(
        client, tmp_path, min_throughput_bps=2000.0, throughput_window_s=0.3, max_attempts=2
    )
    started = time.monotonic()
    with pytest.raises(SlowRetrievalError, match="minimum"):
        d.fetch(target(server))
    assert time.monotonic() - started < 5
    # what arrived is kept: the next try resumes instead of starting over
    partial = tmp_path / "downloads" / f"{target(server).sha256}.partial"
    assert 0 < partial.stat().st_size < len(DATA)


def test_drip_feed_hits_the_total_deadline(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    server.faults = [Fault("drip")]
    d = downloader(client, tmp_path, min_throughput_bps=0.0, total_deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        d.fetch(target(server))
    assert time.monotonic() - started < 3


def test_corrupted_partial_is_discarded_and_downloaded_again(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    """Row 13: a resumed file whose hash is wrong is thrown away and fetched once more."""
    d = downloader(client, tmp_path)
    t = target(server)
    d.dir.mkdir(parents=True)
    rotten = bytearray(DATA[:80_000])
    rotten[1234] ^= 0xFF
    d.partial_path(t).write_bytes(bytes(rotten))
    (d.dir / f"{t.sha256}.validator").write_text('"v1"')
    assert_complete(d.fetch(t))
    assert [e["range"] for e in server.log] == ["bytes=80000-", None]


def test_corrupted_cache_is_discarded_and_downloaded_again(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    d = downloader(client, tmp_path)
    t = target(server)
    d.dir.mkdir(parents=True)
    d.final_path(t).write_bytes(DATA[:-1] + b"?")
    assert_complete(d.fetch(t))
    assert len(server.log) == 1
    assert d.fetch(t) == d.final_path(t) and len(server.log) == 1  # a good cache is used


def test_tampered_bytes_fail_after_one_more_try(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    """Row 1: bytes that never match the signed hash are refused, nothing is left."""
    server.data = DATA[:-1] + b"!"
    with pytest.raises(VerificationError, match="does not match its signed sha256"):
        downloader(client, tmp_path).fetch(target(server))
    assert len(server.log) == 2
    assert list((tmp_path / "downloads").iterdir()) == []


def test_server_errors_are_retried_with_back_off(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    server.faults = [Fault("503"), Fault("503")]
    assert_complete(downloader(client, tmp_path).fetch(target(server)))
    server.faults = [Fault("503")] * 4
    with pytest.raises(TransportError, match="failed after 4 attempts"):
        downloader(client, tmp_path / "other").fetch(target(server))


def test_missing_target_is_not_retried(client: httpx.Client, tmp_path: Path) -> None:
    fs = FileServer(DATA)
    with pytest.raises(TransportError):  # nothing listens on port 9 on loopback
        downloader(client, tmp_path, max_attempts=1).fetch(
            VerifiedTarget("c/1.0.0/m", 1, "0" * 64, target(fs).custom, "http://127.0.0.1:9/m")
        )


def test_not_enough_space_is_refused_before_downloading(
    server: FileServer, client: httpx.Client, tmp_path: Path
) -> None:
    """Row 19: the figures say how much is missing; nothing is fetched."""
    d = Downloader(
        client,
        tmp_path / "downloads",
        DownloadLimits(reserve_bytes=1000),
        measure_free=lambda _p: 150_000,
    )
    with pytest.raises(NotEnoughSpaceError) as info:
        d.fetch(target(server))
    assert info.value.needed_bytes == len(DATA) + 1000 and info.value.free_bytes == 150_000
    assert server.log == []


def test_http_404_is_an_http_status_error(server: FileServer, tmp_path: Path) -> None:
    t = target(server)
    mock = httpx.MockTransport(lambda r: httpx.Response(404))
    with httpx.Client(transport=mock) as c, pytest.raises(HTTPStatusError) as info:
        downloader(c, tmp_path).fetch(t)
    assert info.value.status_code == 404
