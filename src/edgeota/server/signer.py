"""The server's use of the TUF repository: sign new targets, keep metadata fresh."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from edgeota.server.settings import ServerSettings
from edgeota.timeutil import Clock, utcnow
from edgeota.trust.repository import TufRepository
from edgeota.trust.state import ExpiryPolicy, NewTarget


class RepositorySigner(Protocol):
    def sign_targets(self, targets: Sequence[tuple[str, int, str, dict[str, object]]]) -> None:
        """Add (path, length, sha256, custom) targets; re-sign targets, snapshot, timestamp."""

    def remove_targets(self, paths: Sequence[str]) -> None:
        """Stop listing ``paths``; re-sign targets, snapshot, timestamp if any was listed."""

    def refresh_expiring(self) -> list[str]:
        """Re-sign online metadata that expires soon; return the roles re-signed."""


def expiry_policy(settings: ServerSettings) -> ExpiryPolicy:
    return ExpiryPolicy(
        timestamp_expiry_s=settings.timestamp_expiry_s,
        timestamp_refresh_margin_s=(
            settings.timestamp_expiry_s // 2
            if settings.timestamp_refresh_margin_s is None
            else settings.timestamp_refresh_margin_s
        ),
    )


class TufSigner:
    """Adapts the on-disk TUF repository to what the API needs."""

    def __init__(self, repo: TufRepository, clock: Clock = utcnow) -> None:
        self._repo = repo
        self._clock = clock

    def sign_targets(self, targets: Sequence[tuple[str, int, str, dict[str, object]]]) -> None:
        self._repo.add_targets(
            [
                NewTarget(path=path, length=length, sha256=sha256, custom=custom)
                for path, length, sha256, custom in targets
            ]
        )

    def remove_targets(self, paths: Sequence[str]) -> None:
        self._repo.remove_targets(paths)

    def refresh_expiring(self) -> list[str]:
        return [str(role) for role in self._repo.refresh_expiring(self._clock())]


def open_signer(settings: ServerSettings) -> TufSigner:
    repo = TufRepository.open(
        settings.tuf_metadata_dir, settings.online_key_dir, expiry_policy(settings), utcnow
    )
    return TufSigner(repo)
