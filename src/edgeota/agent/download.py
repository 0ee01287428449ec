"""Resumable, verified downloads of signed targets (pip's habits, TUF's caps).

A target goes to ``<downloads>/<sha256>.partial`` and reaches ``<downloads>/<sha256>`` only
after its length and sha256 match the signed values. An interrupted download resumes with
``Range: bytes=N-`` and ``If-Range: <validator>``; the server's answer decides what happens:

- ``206`` with a Content-Range that starts at N and fits the signed length: append;
- ``200`` (Range ignored, or the file changed so If-Range failed): restart from zero;
- ``206`` with any other Content-Range, or ``416``: discard the partial and restart;
- more bytes than the signed length: stop at once, discard, VerificationError (endless data);
- a read that stalls past the per-read timeout, throughput under the minimum over a window,
  or the total deadline passing: the attempt fails (the deadline also ends the download);
- a complete file whose hash does not match: discard and download once more from zero
  (a corrupted partial or cache), then VerificationError.

Errors: TransportError (retry later), VerificationError (the bytes are bad), and
InsufficientSpaceError (checked before starting; disk full while writing).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import httpx

from edgeota.agent.diskspace import FreeBytes, NotEnoughSpaceError, ensure_free, free_bytes
from edgeota.agent.slots import file_sha256
from edgeota.errors import EdgeotaError, HTTPStatusError, TransportError, VerificationError
from edgeota.fsutil import atomic_write_text, fsync_dir
from edgeota.targets import VerifiedTarget

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class DownloadLimits:
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # longest silence tolerated between two reads
    total_deadline_s: float | None = 3600.0  # whole download, all attempts included
    min_throughput_bps: float = 4096.0  # bytes/s, measured over each window below
    throughput_window_s: float = 30.0
    max_attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    reserve_bytes: int = 0  # disk that must stay free after the download
    crash_after_bytes: int | None = None  # fault injection: SIGKILL self after this many


@dataclass
class DownloadProgress:
    path: str
    total: int
    received: int = 0  # bytes in the partial file now
    attempts: int = 0
    restarts: int = 0  # times the partial file was thrown away
    resumed_from: int = 0  # offset of the last resumed request


class Fetcher(Protocol):
    """What the agent needs from a downloader (Downloader; a fake in tests)."""

    def fetch(self, target: VerifiedTarget, cancel: threading.Event | None = None) -> Path: ...
    def bytes_needed(self, target: VerifiedTarget) -> int: ...
    def purge(self, keep: Collection[str] = ()) -> int: ...
    def remove(self, sha256s: Collection[str]) -> int: ...


class SlowRetrievalError(TransportError):
    """The server sends too slowly (minimum throughput); worth retrying later."""


class DeadlineExceededError(SlowRetrievalError):
    """The total deadline of a download passed; it is abandoned until the next try."""


class DownloadCancelledError(EdgeotaError):
    """The caller asked to stop; the partial file is kept for resuming."""


class _DiscardPartialError(Exception):
    """The server's answer does not continue our partial file: throw it away, retry."""


class _RetryableStatusError(Exception):
    pass


def _sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _strong_validator(resp: httpx.Response) -> str | None:
    """An If-Range value: a strong ETag, else Last-Modified (weak ETags are not allowed)."""
    etag: str | None = resp.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    modified: str | None = resp.headers.get("last-modified")
    return modified


class Downloader:
    def __init__(
        self,
        client: httpx.Client,
        downloads_dir: Path,
        limits: DownloadLimits | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        measure_free: FreeBytes = free_bytes,
        crash: Callable[[], None] = _sigkill,
        on_progress: Callable[[DownloadProgress], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.dir = downloads_dir
        self.limits = limits or DownloadLimits()
        self._sleep = sleep
        self._clock = clock
        self._measure_free = measure_free
        self._crash = crash
        self._on_progress = on_progress
        self._rng = rng or random.Random()
        self._written = 0  # bytes written by this downloader, for crash_after_bytes

    # -- paths -------------------------------------------------------------------------
    def final_path(self, target: VerifiedTarget) -> Path:
        if not _SHA256_RE.match(target.sha256):
            raise VerificationError(f"target {target.path!r} has an invalid sha256")
        return self.dir / target.sha256

    def partial_path(self, target: VerifiedTarget) -> Path:
        return self.final_path(target).with_name(f"{target.sha256}.partial")

    def _validator_path(self, target: VerifiedTarget) -> Path:
        return self.final_path(target).with_name(f"{target.sha256}.validator")

    def bytes_needed(self, target: VerifiedTarget) -> int:
        """Bytes still to fetch for ``target`` (0 when a complete file is cached)."""
        if self.final_path(target).exists():
            return 0
        try:
            have = self.partial_path(target).stat().st_size
        except FileNotFoundError:
            have = 0
        return max(target.length - have, 0) if have <= target.length else target.length

    def purge(self, keep: Collection[str] = ()) -> int:
        """Delete cached and partial files except those of the sha256 digests in ``keep``."""
        removed = 0
        if not self.dir.is_dir():
            return 0
        for entry in self.dir.iterdir():
            if entry.name.split(".", 1)[0] not in keep:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
        if removed:
            fsync_dir(self.dir)
        return removed

    def remove(self, sha256s: Collection[str]) -> int:
        """Delete the cached and partial files of the given sha256 digests."""
        removed = 0
        for sha in sha256s:
            if not _SHA256_RE.match(sha):
                continue
            for suffix in ("", ".partial", ".validator"):
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / f"{sha}{suffix}").unlink()
                    removed += 1
        return removed

    def _discard(self, target: VerifiedTarget) -> None:
        for path in (self.partial_path(target), self._validator_path(target)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- the download ------------------------------------------------------------------
    def fetch(self, target: VerifiedTarget, cancel: threading.Event | None = None) -> Path:
        """Return the path of ``target``'s verified bytes, downloading what is missing."""
        final = self.final_path(target)
        self.dir.mkdir(parents=True, exist_ok=True)
        if final.exists():
            if final.stat().st_size == target.length and file_sha256(final) == target.sha256:
                return final
            final.unlink()  # a corrupted cache entry: never trusted, fetched again
        ensure_free(
            self.dir,
            self.bytes_needed(target),
            reserve_bytes=self.limits.reserve_bytes,
            what=f"target {target.path!r}",
            measure=self._measure_free,
        )
        progress = DownloadProgress(path=target.path, total=target.length)
        deadline = None
        if self.limits.total_deadline_s is not None:
            deadline = self._clock() + self.limits.total_deadline_s
        for second_try in (False, True):
            self._attempts(target, progress, deadline, cancel)
            partial = self.partial_path(target)
            if file_sha256(partial) == target.sha256:
                with partial.open("rb") as f:
                    os.fsync(f.fileno())
                partial.replace(final)
                fsync_dir(self.dir)
                with contextlib.suppress(FileNotFoundError):
                    self._validator_path(target).unlink()
                return final
            self._discard(target)
            progress.restarts += 1
            if second_try:
                break
        raise VerificationError(
            f"target {target.path!r} from {target.url} does not match its signed sha256, "
            "twice: the server or something between serves tampered bytes; nothing installed"
        )

    def _attempts(
        self,
        target: VerifiedTarget,
        progress: DownloadProgress,
        deadline: float | None,
        cancel: threading.Event | None,
    ) -> None:
        """Bring the partial file to the signed length, retrying with back-off."""
        last: Exception | None = None
        for attempt in range(1, self.limits.max_attempts + 1):
            progress.attempts += 1
            if cancel is not None and cancel.is_set():
                raise DownloadCancelledError(f"download of {target.path!r} stopped")
            self._check_deadline(target, deadline)
            try:
                self._attempt(target, progress, deadline, cancel)
                return
            except _DiscardPartialError as e:
                # Restart at once: the server answered, it just did not continue our bytes.
                self._discard(target)
                progress.restarts += 1
                last = e
                continue
            except DeadlineExceededError:
                raise
            except (httpx.RequestError, SlowRetrievalError, _RetryableStatusError) as e:
                last = e
            if attempt < self.limits.max_attempts:
                base = self.limits.backoff_initial_s * 2 ** (attempt - 1)
                self._sleep(min(self.limits.backoff_max_s, base) * self._rng.uniform(0.5, 1.0))
        # Slow retrieval keeps its own type, so the report can say why (row 8).
        error = SlowRetrievalError if isinstance(last, SlowRetrievalError) else TransportError
        raise error(
            f"download of {target.path!r} from {target.url} failed after "
            f"{self.limits.max_attempts} attempts: {last}; it resumes on the next try"
        ) from last

    def _check_deadline(self, target: VerifiedTarget, deadline: float | None) -> None:
        if deadline is not None and self._clock() > deadline:
            raise DeadlineExceededError(
                f"download of {target.path!r} took longer than its "
                f"{self.limits.total_deadline_s:.0f} s deadline; it resumes on the next try"
            )

    def _timeout(self, deadline: float | None) -> httpx.Timeout:
        read, connect = self.limits.read_timeout_s, self.limits.connect_timeout_s
        if deadline is not None:
            left = max(deadline - self._clock(), 0.001)
            read, connect = min(read, left), min(connect, left)
        return httpx.Timeout(read, connect=connect)

    def _attempt(
        self,
        target: VerifiedTarget,
        progress: DownloadProgress,
        deadline: float | None,
        cancel: threading.Event | None,
    ) -> None:
        partial = self.partial_path(target)
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > target.length:
            raise _DiscardPartialError("partial file is longer than the signed length")
        progress.received = offset
        if offset == target.length:
            return  # complete from an earlier attempt; fetch() checks the hash
        headers = {"Accept-Encoding": "identity"}
        validator = None
        if offset:
            headers["Range"] = f"bytes={offset}-"
            with contextlib.suppress(FileNotFoundError):
                validator = self._validator_path(target).read_text("utf-8") or None
            if validator:
                headers["If-Range"] = validator
        with self.client.stream(
            "GET",
            target.url,
            headers=headers,
            timeout=self._timeout(deadline),
            follow_redirects=True,
        ) as resp:
            offset = self._accept(target, resp, offset, validator)
            progress.resumed_from = offset
            self._receive(target, resp, offset, progress=progress, deadline=deadline, cancel=cancel)

    def _accept(
        self, target: VerifiedTarget, resp: httpx.Response, offset: int, validator: str | None
    ) -> int:
        """Check the response head; return the offset its body starts at."""
        status = resp.status_code
        if status == 206:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("content-range", ""))
            if m is None:
                raise _DiscardPartialError("206 without a valid Content-Range")
            start, end, total = int(m[1]), int(m[2]), m[3]
            if start != offset or end < start or end >= target.length:
                raise _DiscardPartialError(f"Content-Range {m[0]!r} does not continue at {offset}")
            if total != "*" and int(total) != target.length:
                raise _DiscardPartialError(f"Content-Range {m[0]!r} has the wrong total length")
            new_validator = _strong_validator(resp)
            if offset and validator and new_validator and new_validator != validator:
                raise _DiscardPartialError("the file changed between attempts (new validator)")
        elif status == 200:
            offset = 0  # Range ignored or If-Range failed: the body is the whole file
        elif status == 416:
            raise _DiscardPartialError("416 Range Not Satisfiable")
        elif status in _RETRYABLE_STATUS:
            raise _RetryableStatusError(f"HTTP {status}")
        else:
            raise HTTPStatusError(
                f"GET {target.url} answered HTTP {status}; check that the target is published",
                status,
            )
        declared = resp.headers.get("content-length")
        if declared is not None and declared.isdigit() and offset + int(declared) > target.length:
            self._discard(target)
            raise VerificationError(
                f"{target.url} declares {offset + int(declared)} bytes, more than the "
                f"{target.length} signed for {target.path!r}; refused without reading it"
            )
        if offset == 0:
            new_validator = _strong_validator(resp)
            path = self._validator_path(target)
            if new_validator:
                atomic_write_text(path, new_validator)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return offset

    def _receive(
        self,
        target: VerifiedTarget,
        resp: httpx.Response,
        offset: int,
        *,
        progress: DownloadProgress,
        deadline: float | None,
        cancel: threading.Event | None,
    ) -> None:
        limits = self.limits
        window_start, window_bytes = self._clock(), 0
        partial = self.partial_path(target)
        with partial.open("ab" if offset else "wb") as f:
            try:
                # No chunk size: bytes are written as they arrive, so a cut connection loses
                # nothing already received, and the clocks are checked on every read.
                for data in resp.iter_bytes():
                    chunk = self._until_crash_point(data)
                    if offset + len(chunk) > target.length:
                        f.close()
                        self._discard(target)
                        raise VerificationError(
                            f"{target.url} sent more than the {target.length} bytes signed for "
                            f"{target.path!r}; stopped at the cap, nothing installed"
                        )
                    f.write(chunk)
                    offset += len(chunk)
                    progress.received = offset
                    self._written += len(chunk)
                    self._maybe_crash(f)
                    if self._on_progress is not None:
                        self._on_progress(progress)
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelledError(f"download of {target.path!r} stopped")
                    self._check_deadline(target, deadline)
                    window_bytes += len(chunk)
                    elapsed = self._clock() - window_start
                    if elapsed >= limits.throughput_window_s:
                        if window_bytes / elapsed < limits.min_throughput_bps:
                            raise SlowRetrievalError(
                                f"{target.url} sent {window_bytes / elapsed:.0f} B/s, under the "
                                f"{limits.min_throughput_bps:.0f} B/s minimum"
                            )
                        window_start, window_bytes = self._clock(), 0
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                f.close()
                self._discard(target)
                raise NotEnoughSpaceError(
                    f"disk full while downloading {target.path!r} into {self.dir}; the partial "
                    "file was removed; free some space",
                    needed_bytes=target.length,
                    free_bytes=self._measure_free(self.dir),
                ) from e
            finally:
                if not f.closed:
                    f.flush()
                    os.fsync(f.fileno())
        if offset < target.length:
            raise httpx.RemoteProtocolError(
                f"connection ended after {offset} of {target.length} bytes"
            )

    def _until_crash_point(self, data: bytes) -> bytes:
        """With crash_after_bytes set, cut ``data`` so the crash comes at that exact byte."""
        cap = self.limits.crash_after_bytes
        if cap is None or self._written + len(data) <= cap:
            return data
        return data[: max(cap - self._written, 1)]

    def _maybe_crash(self, f: BinaryIO) -> None:
        cap = self.limits.crash_after_bytes
        if cap is not None and self._written >= cap:
            f.flush()
            os.fsync(f.fileno())  # the bytes so far survive, as after a real kill
            self._crash()
            # The rest of the read was cut off for the crash; going on would leave a gap.
            raise RuntimeError("the crash hook returned; the download cannot go on")
