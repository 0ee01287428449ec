"""The simulated fleet's network: one shared connection pool, a cache in front of the
immutable TUF files, per-device flakiness, and counters.

    device client ─► FlakyTransport (per device) ─► SharedCache ─► CountingTransport ─► server

``SharedCache`` plays the CDN or caching proxy that a real fleet's immutable downloads go
through (the server marks versioned metadata and content-addressed targets ``immutable``):
a thousand devices on one machine then cost the server one copy of each file, not a
thousand. ``CountingTransport`` sees only what reached the server.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

_CACHE_MAX_BYTES = 256 * 1024 * 1024


@dataclass
class NetworkStats:
    """What crossed the wire to the server, and how the check-ins fared."""

    requests: int = 0
    bytes_from_server: int = 0  # response headers and bodies the server sent
    bytes_to_server: int = 0  # request bodies
    cache_hits: int = 0
    bytes_from_cache: int = 0
    dropped: int = 0
    checkin_latencies_s: list[float] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def checkin(self, seconds: float) -> None:
        with self._lock:
            self.checkin_latencies_s.append(seconds)

    def checkin_p95_ms(self) -> float | None:
        with self._lock:
            samples = sorted(self.checkin_latencies_s)
        if not samples:
            return None
        return 1000.0 * samples[min(len(samples) - 1, int(0.95 * len(samples)))]


class _CountingStream(httpx.SyncByteStream):
    def __init__(self, stream: httpx.SyncByteStream, stats: NetworkStats) -> None:
        self._stream = stream
        self._stats = stats

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            self._stats.add(bytes_from_server=len(chunk))
            yield chunk

    def close(self) -> None:
        self._stream.close()


class CountingTransport(httpx.BaseTransport):
    """Counts requests and bytes to and from the server, and times the check-ins."""

    def __init__(self, inner: httpx.BaseTransport, stats: NetworkStats) -> None:
        self._inner = inner
        self.stats = stats

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        response = self._inner.handle_request(request)
        if request.url.path.endswith("/desired-state"):
            self.stats.checkin(time.monotonic() - started)
        head = sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 17
        body_out = int(request.headers.get("content-length", "0") or 0)
        self.stats.add(requests=1, bytes_from_server=head, bytes_to_server=body_out)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _CountingStream(response.stream, self.stats)
        return response

    def close(self) -> None:
        self._inner.close()


class SharedCache(httpx.BaseTransport):
    """Serves repeated GETs of responses the server marked immutable from memory."""

    def __init__(self, inner: httpx.BaseTransport, stats: NetworkStats) -> None:
        self._inner = inner
        self._stats = stats
        self._entries: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {}
        self._size = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        cacheable = request.method == "GET" and "range" not in request.headers
        key = str(request.url)
        hit = self._entries.get(key) if cacheable else None
        if hit is not None:
            status, headers, body = hit
            self._stats.add(cache_hits=1, bytes_from_cache=len(body))
            return httpx.Response(status, headers=headers, content=body, request=request)
        response = self._inner.handle_request(request)
        control = response.headers.get("cache-control", "")
        if not (cacheable and response.status_code == 200 and "immutable" in control):
            return response
        try:
            body = response.read()
        finally:
            response.close()
        # Kept as sent, so a device sees the same headers (ETag) as from the server.
        headers = [(k, v) for k, v in response.headers.raw if k.lower() != b"content-encoding"]
        if self._size + len(body) <= _CACHE_MAX_BYTES:
            self._entries[key] = (response.status_code, headers, body)
            self._size += len(body)
        return httpx.Response(response.status_code, headers=headers, content=body, request=request)

    def close(self) -> None:
        self._inner.close()


class FlakyTransport(httpx.BaseTransport):
    """Drops a share of one device's requests: half before they reach the server, half after
    (the answer is lost), so retries and idempotent reports both get exercised."""

    def __init__(
        self, inner: httpx.BaseTransport, drop_share: float, rng: random.Random, stats: NetworkStats
    ) -> None:
        if not 0 <= drop_share < 1:
            raise ValueError(f"drop_share must be in [0, 1), got {drop_share}")
        self._inner = inner
        self._drop = drop_share
        self._rng = rng
        self._stats = stats

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/enroll"):
            # A lost enrollment answer burns the one-time token: the device then needs a new
            # one from its operator, a procedure outside what the simulation is about.
            return self._inner.handle_request(request)
        roll = self._rng.random()
        if roll < self._drop / 2:
            self._stats.add(dropped=1)
            raise httpx.ConnectError(
                "simulated network fault: the request was lost", request=request
            )
        response = self._inner.handle_request(request)
        if roll < self._drop:
            try:
                response.read()
            finally:
                response.close()
            self._stats.add(dropped=1)
            raise httpx.ReadError("simulated network fault: the answer was lost", request=request)
        return response

    def close(self) -> None:
        return None  # the inner transport is shared; its owner closes it


def shared_transport(
    stats: NetworkStats, *, verify: ssl.SSLContext | bool = True, connections: int = 16
) -> httpx.BaseTransport:
    """The fleet's one connection pool to the server, counted, behind the shared cache."""
    pool = httpx.HTTPTransport(
        verify=verify,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )
    return SharedCache(CountingTransport(pool, stats), stats)
