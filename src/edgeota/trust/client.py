"""The device side of TUF: fetch and verify metadata, and say what a target must look like.

python-tuf's ``Updater`` runs the client workflow (root chain, timestamp, snapshot, targets,
with the rollback, freeze, mix-and-match and endless-data checks). This module feeds it
through the caller's ``httpx.Client`` (which carries the TLS trust) and translates its
exceptions into edgeota's tree at this one boundary:

    tuf RepositoryError family  -> VerificationError  (DeserializationError -> FormatError)
    DownloadLengthMismatchError -> VerificationError  (more bytes than the cap: endless data)
    DownloadHTTPError           -> HTTPStatusError
    other DownloadError         -> TransportError

The python-tuf exception stays attached as ``__cause__``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.serialization import DeserializationError
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from edgeota.errors import (
    EdgeotaError,
    FormatError,
    HTTPStatusError,
    PolicyError,
    TransportError,
    VerificationError,
)
from edgeota.fsutil import safe_relative_path
from edgeota.targets import TargetCustom, VerifiedTarget

_CHUNK_BYTES = 64 * 1024


class HttpxFetcher(FetcherInterface):
    """Streams downloads through a caller-provided ``httpx.Client``.

    The byte cap is enforced by ``FetcherInterface.download_file`` as the chunks arrive, so
    an endless response is cut off after at most one chunk past the cap.
    """

    def __init__(self, client: httpx.Client, chunk_bytes: int = _CHUNK_BYTES) -> None:
        self._client = client
        self._chunk_bytes = chunk_bytes
        self.last_url: str | None = None

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.last_url = url
        try:
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        except httpx.HTTPError as e:
            raise tuf_errors.DownloadError(f"GET {url} failed: {e}") from e
        if response.status_code != 200:
            response.close()
            raise tuf_errors.DownloadHTTPError(
                f"GET {url} answered HTTP {response.status_code}", response.status_code
            )
        return self._chunks(response, url)

    def _chunks(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(self._chunk_bytes)
        except httpx.HTTPError as e:
            # Errors while streaming escape FetcherInterface.fetch's own wrapping.
            raise tuf_errors.DownloadError(f"GET {url} failed while reading: {e}") from e
        finally:
            response.close()


class TrustClient:
    """Verified TUF metadata for one device, persisted in ``metadata_dir``.

    ``bootstrap_root`` is the root.json pinned at enrollment; it is the trust anchor on
    every refresh when given. Without it the locally persisted root is used, which must exist.
    """

    def __init__(
        self,
        metadata_dir: Path,
        metadata_base_url: str,
        targets_base_url: str,
        client: httpx.Client,
        bootstrap_root: bytes | None,
        *,
        config: UpdaterConfig | None = None,
    ) -> None:
        if bootstrap_root is None and not (metadata_dir / "root.json").exists():
            raise ValueError(
                f"no trusted root in {metadata_dir}: pass the root.json pinned at enrollment "
                "as bootstrap_root"
            )
        self._metadata_dir = metadata_dir
        self._metadata_base_url = metadata_base_url
        self._targets_base_url = targets_base_url.rstrip("/")
        self._fetcher = HttpxFetcher(client)
        self._bootstrap_root = bootstrap_root
        # UpdaterConfig's defaults cap every metadata download (endless-data protection).
        self._config = config or UpdaterConfig()
        self._updater: Updater | None = None

    def refresh(self) -> None:
        """Fetch and verify the newest root, timestamp, snapshot and targets metadata.

        Raises VerificationError (or FormatError) when the repository or someone in between
        serves metadata that must not be trusted, TransportError when the network fails.
        """
        self._refresh()

    def _refresh(self) -> Updater:
        self._metadata_dir.mkdir(parents=True, exist_ok=True)
        self._updater = None
        self._fetcher.last_url = None
        with self._tuf_errors("loading the trusted root"):
            # A fresh Updater per refresh: python-tuf allows one refresh per instance.
            updater = Updater(
                str(self._metadata_dir),
                self._metadata_base_url,
                fetcher=self._fetcher,
                config=self._config,
                bootstrap=self._bootstrap_root,
            )
        with self._tuf_errors("refreshing top-level metadata"):
            updater.refresh()
        self._updater = updater
        return updater

    def get_target(self, path: str) -> VerifiedTarget:
        """What the signed metadata says about ``path``: length, sha256, custom, URL.

        Refreshes first if this client has not refreshed yet. Raises PolicyError for a path
        that is unsafe or not listed, FormatError when its custom field is not edgeota's.
        """
        safe_relative_path(path)
        updater = self._updater or self._refresh()
        with self._tuf_errors(f"looking up target {path!r}"):
            info = updater.get_targetinfo(path)
        if info is None:
            raise PolicyError(
                f"target {path!r} is not listed in the signed targets metadata; the server "
                "named a file it has not published (or not yet): refresh later"
            )
        sha256 = info.hashes.get("sha256")
        if not isinstance(sha256, str):
            raise VerificationError(f"target {path!r} has no sha256 hash in its signed metadata")
        try:
            custom = TargetCustom.from_custom(info.custom)
        except FormatError as e:
            raise FormatError(f"target {path!r}: {e}") from e
        return VerifiedTarget(
            path=path,
            length=info.length,
            sha256=sha256,
            custom=custom,
            url=self._target_url(path, sha256),
        )

    def _target_url(self, path: str, sha256: str) -> str:
        # Consistent snapshots: the file is served as <dir>/<sha256>.<name>.
        dirname, sep, basename = path.rpartition("/")
        return f"{self._targets_base_url}/{dirname}{sep}{sha256}.{basename}"

    @contextlib.contextmanager
    def _tuf_errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as e:
            raise map_tuf_error(e, doing, self._fetcher.last_url) from e


def map_tuf_error(error: Exception, doing: str, last_url: str | None) -> EdgeotaError:
    """The edgeota exception for a python-tuf ``error`` raised while ``doing`` something."""
    last = _file_name(last_url)
    where = f" (last metadata fetched: {last})" if last else ""
    detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    refused = (
        f"TUF metadata refused while {doing}{where}: {detail}. The refused metadata is not "
        "used; the device keeps what it verified before. Retry later; if it persists, check "
        "the server's TUF repository (keys, versions, expiry) and the device clock."
    )
    if isinstance(error, tuf_errors.DownloadLengthMismatchError):
        return VerificationError(refused)
    if isinstance(error, DeserializationError):
        return FormatError(refused)
    if isinstance(error, tuf_errors.RepositoryError):
        return VerificationError(refused)
    if isinstance(error, tuf_errors.DownloadHTTPError):
        return HTTPStatusError(
            f"TUF download failed while {doing}{where}: {error}; retry later", error.status_code
        )
    return TransportError(f"TUF download failed while {doing}{where}: {detail}; retry later")


def _file_name(url: str | None) -> str | None:
    if url is None:
        return None
    return urlsplit(url).path.rpartition("/")[2] or url
