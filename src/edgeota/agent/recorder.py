"""Every event the agent reports is written here, into the journal and its outbox.

A state transition and the event that reports it are saved in one journal write, so a
crash can lose neither without the other. Refusals are told once per release and reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from edgeota.agent.api_client import DesiredComponent
from edgeota.agent.journal import ComponentRecord, Journal, ReleaseRef
from edgeota.agent.statemachine import Event, SlotEffect, State, reported_name, step

log = logging.getLogger(__name__)

REASON_CHARS = 1000  # the longest reason an event carries


def figures_detail(figures: Mapping[str, float]) -> dict[str, Any]:
    """Event detail with the health figures; NaN and infinities become null (strict JSON)."""
    return {"figures": {k: v if math.isfinite(v) else None for k, v in figures.items()}}


class Recorder:
    def __init__(self, journal: Journal, now: Callable[[], datetime]) -> None:
        self.journal = journal
        self._now = now
        self._told: dict[str, tuple[str, str]] = {}  # component -> last refusal told

    def timestamp(self) -> str:
        return self._now().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def transition(
        self,
        name: str,
        event: Event,
        *,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
        before: Callable[[ComponentRecord], None] | None = None,
    ) -> None:
        """Apply ``event`` to the record and save it, with its event, in one journal write."""
        rec = self.journal.component(name)
        tr = step(rec.state, event)  # raises on an illegal event, before anything changes
        if before is not None:
            before(rec)
        release = rec.pending or rec.committed
        rec.state = tr.target
        if tr.effect is SlotEffect.COMMIT:
            assert rec.pending is not None
            rec.committed_slot = rec.pending.slot
            p = rec.pending
            rec.committed = ReleaseRef(p.version, p.release_id, p.variant, dict(p.needs))
            rec.last_error = None
        if tr.target is State.IDLE:
            rec.pending, rec.trial_attempts, rec.held_for = None, 0, []
        self.journal.record_event(
            time=self.timestamp(),
            component=name,
            event=reported_name(event),
            state=tr.target.value,
            release_id=release.release_id if release else None,
            version=release.version if release else None,
            reason=None if reason is None else reason[:REASON_CHARS],
            detail=detail,
        )
        self.journal.save()
        log.info("%s: %s -> %s %s", name, event.value, tr.target.value, reason or "")

    def note(
        self,
        name: str,
        event: str,
        reason: str,
        *,
        detail: dict[str, Any] | None = None,
        about: ReleaseRef | None = None,
        save: bool = True,
    ) -> None:
        """Report an event that moves no state: about ``about``, else the release under way."""
        rec = self.journal.component(name)
        release = about or rec.pending or rec.committed
        self.journal.record_event(
            time=self.timestamp(),
            component=name,
            event=event,
            state=rec.state.value,
            release_id=release.release_id if release else None,
            version=release.version if release else None,
            reason=reason[:REASON_CHARS],
            detail=detail,
        )
        if save:
            self.journal.save()

    def mark_told(self, name: str, release_id: str, reason: str) -> None:
        """What was just reported about a release needs no refusal saying it again."""
        self._told[name] = (release_id, reason)

    def tell_refusal(
        self,
        name: str,
        desired: DesiredComponent,
        reason: str,
        *,
        event: str = "update_refused",
        record: bool = True,
    ) -> None:
        """Report why a desired release is not installed, once per release and reason."""
        key = (desired.release_id, reason)
        if self._told.get(name) == key:
            return
        self._told[name] = key
        rec = self.journal.components.get(name) if record else None
        self.journal.record_event(
            time=self.timestamp(),
            component=name,
            event=event,
            state=(rec.state if rec else State.IDLE).value,
            release_id=desired.release_id[:64],
            version=desired.version[:64],
            reason=reason[:REASON_CHARS],
        )
        self.journal.save()
        log.info("%s: %s %s: %s", name, event, desired.release_id, reason)
