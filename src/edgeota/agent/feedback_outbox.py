"""Feedback the device's user gave, kept until the server has it.

A report is a rating (1-5), an optional comment of at most 1000 characters, and the release
it concerns; nothing else is accepted, so user data and model inputs cannot travel this way.
Each report gets an id when given; the server stores a resent report once. Reports wait in
``<data dir>/feedback-outbox.json`` (written atomically) while the server is unreachable;
at most ``OUTBOX_LIMIT`` are kept, the oldest dropped first.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeota.errors import EdgeotaError, HTTPStatusError, TransportError
from edgeota.fsutil import atomic_write_text

log = logging.getLogger(__name__)

COMMENT_CHARS = 1000
OUTBOX_LIMIT = 100
FIELDS = frozenset({"rating", "comment", "release_id", "component"})


class FeedbackError(ValueError):
    """A report that breaks the rules above (said to the user as is)."""


def validate(body: Mapping[str, Any]) -> tuple[int, str]:
    """The rating and the comment of a report from the local API, or FeedbackError."""
    extra = set(body) - FIELDS
    if extra:
        raise FeedbackError(
            f"unknown field(s) {', '.join(sorted(extra))}: feedback is a rating, a comment and "
            "the release; it never carries user data or model inputs"
        )
    rating = body.get("rating")
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
        raise FeedbackError("rating must be a whole number from 1 (bad) to 5 (good)")
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        raise FeedbackError("comment must be text")
    comment = comment.strip()
    if len(comment) > COMMENT_CHARS:
        raise FeedbackError(f"comment has {len(comment)} characters; at most {COMMENT_CHARS}")
    return rating, comment


class FeedbackOutbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def add(self, release_id: str, rating: int, comment: str) -> dict[str, Any]:
        report = {
            "client_id": secrets.token_urlsafe(12),
            "release_id": release_id,
            "rating": rating,
            "comment": comment,
            "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        with self._lock:
            reports = [*self._load(), report][-OUTBOX_LIMIT:]
            self._save(reports)
        return report

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._load()

    def flush(self, post: Callable[[Mapping[str, Any]], object]) -> int:
        """Send waiting reports oldest first; return how many left the outbox.

        A network failure stops the flush (the rest waits); a report the server refuses as
        invalid (4xx other than auth) is dropped with a warning, it would never pass.
        """
        done = 0
        for report in self.pending():
            try:
                post(report)
            except HTTPStatusError as e:
                if e.status_code in (401, 403) or e.status_code >= 500:
                    break
                log.warning("feedback %s refused by the server, dropped: %s", report, e)
            except TransportError:
                break
            except EdgeotaError as e:
                log.warning("feedback %s could not be sent, dropped: %s", report, e)
            self._remove(str(report["client_id"]))
            done += 1
        return done

    def _remove(self, client_id: str) -> None:
        with self._lock:
            self._save([r for r in self._load() if r.get("client_id") != client_id])

    def _load(self) -> list[dict[str, Any]]:
        try:
            body = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        except ValueError:
            log.warning("%s does not parse; starting a new feedback outbox", self.path)
            return []
        return [r for r in body if isinstance(r, dict)] if isinstance(body, list) else []

    def _save(self, reports: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(reports, indent=1), 0o600)
