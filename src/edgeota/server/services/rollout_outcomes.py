"""Device events as rollout outcomes: where each told device stands in its rollout.

The agent reports every step of an update as an event naming the release
(``edgeota.agent.statemachine``); the rollout's row for that device follows it. Events are
applied in ``seq`` order and only past the newest one applied, so a resent or late batch
never moves a device back. Times are the server's, since failure thresholds compare them
with the server's clock (a resume counts only failures reported after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeota.rollout import DeviceStatus
from edgeota.server.models import DeviceComponent, Rollout, RolloutDevice
from edgeota.server.schemas import EventIn

D = DeviceStatus
EVENT_OUTCOMES: dict[str, DeviceStatus] = {
    # Healthy and committed, or the device already runs this very release.
    "committed": D.UPDATED,
    "already_installed": D.UPDATED,
    # Switched, failed its health check, and went back to the committed slot.
    "rolled_back": D.ROLLED_BACK,
    # Failed before the switch, or refused by the device (signed policy, failed before).
    "download_failed": D.FAILED,
    "stage_invalid": D.FAILED,
    "update_failed": D.FAILED,
    "update_refused": D.FAILED,
    "refused": D.FAILED,
    # Somewhere in between; a retry after a failure also comes back through here.
    "update_found": D.UPDATING,
    "download_started": D.UPDATING,
    "download_ok": D.UPDATING,
    "resume": D.UPDATING,
    "switched": D.UPDATING,
    "trial_interrupted": D.UPDATING,
    "health_failed": D.UPDATING,
    "attempts_exhausted": D.UPDATING,
    # Staged, and waiting for a maintenance window (or the user put it off).
    "waiting_for_window": D.UPDATING,
    "deferred": D.UPDATING,
    # Waiting for another component's release it needs, or passed and held for its set.
    "waiting_for_need": D.UPDATING,
    "held_for_set": D.UPDATING,
}
del D

_CHUNK = 500  # ids per IN (...) list


def outcome(event: EventIn) -> DeviceStatus | None:
    """Where an event puts its device in a rollout (None: the event says nothing about it).

    A download that failed on the network is retried by the agent (``will_retry``): the
    device is still updating, so a brief outage does not count against the failure threshold.
    """
    if event.event == "download_failed" and event.detail.get("will_retry") is True:
        return DeviceStatus.UPDATING
    return EVENT_OUTCOMES.get(event.event)


def record(session: Session, device_id: str, events: Sequence[EventIn], now: datetime) -> None:
    """Move the device's rollout rows along with a batch of its events."""
    by_release = {e.release_id for e in events if e.release_id and e.event in EVENT_OUTCOMES}
    if not by_release:
        return
    rows = session.execute(
        select(RolloutDevice, Rollout.release_id)
        .join(Rollout, Rollout.id == RolloutDevice.rollout_id)
        .where(RolloutDevice.device_id == device_id, Rollout.release_id.in_(by_release))
    ).all()
    for row, release_id in rows:
        for e in sorted(events, key=lambda e: e.seq):
            status = outcome(e)
            if status is None or e.release_id != release_id:
                continue
            if row.last_seq is not None and e.seq <= row.last_seq:
                continue
            row.last_seq = e.seq
            if row.status != status:
                row.status = status.value
                row.changed_at = now


def already_running(
    session: Session, device_ids: Sequence[str], component: str, release_id: str
) -> set[str]:
    """Those of ``device_ids`` that report ``release_id`` installed: told, they start UPDATED.

    A device that already runs the release reports nothing new when told (its desired state
    may not even change), so waiting for its event would hold the phase forever.
    """
    found: set[str] = set()
    for start in range(0, len(device_ids), _CHUNK):
        found.update(
            session.scalars(
                select(DeviceComponent.device_id).where(
                    DeviceComponent.device_id.in_(device_ids[start : start + _CHUNK]),
                    DeviceComponent.component == component,
                    DeviceComponent.release_id == release_id,
                    DeviceComponent.version.is_not(None),
                )
            )
        )
    return found
