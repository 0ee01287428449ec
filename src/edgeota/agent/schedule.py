"""When a staged release may switch: its switch policy, the device's windows, the user's say.

The agent downloads and stages an update as soon as it is desired, but switches to it only
inside one of the device's maintenance windows (``edgeota.rollout.windows``), unless the
release came with the switch policy "now" (urgent fixes, fleet rollbacks, plain deployments).
While it waits it reports ``waiting_for_window`` once per start it waits for.

The device's user may put an update off (``edgeota agent defer``) up to ``max_deferrals``
times; each deferral skips one window. Once they are used up the update is no longer offered
and is applied in the next window (``forced_apply_at``). A deferral request is a small file
the command drops into ``<data dir>/deferrals/``; the agent applies it to the journal (with
its event, in one write) when it next reviews the staged release, and then deletes it.

:func:`review` is pure: the journaled wait record, the desired state and the requests in,
a new record, the verdict and the events to report out.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edgeota.errors import FormatError
from edgeota.fsutil import atomic_write_text
from edgeota.rollout.windows import (
    MaintenanceWindow,
    can_defer,
    forced_apply_at,
    next_allowed_time,
    next_window_start,
)
from edgeota.timeutil import as_utc

SWITCH_NOW = "now"
SWITCH_WINDOW = "window"
POLICIES = frozenset({SWITCH_NOW, SWITCH_WINDOW})
DEFERRALS_DIR = "deferrals"
_REQUESTS_REMEMBERED = 32  # ids of applied requests kept, so a re-read file is not re-applied


@dataclass(frozen=True)
class Schedule:
    """The device's windows (none: any time is allowed) and its deferral allowance."""

    windows: tuple[MaintenanceWindow, ...] = ()
    max_deferrals: int = 0
    time_zone: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time_zone": self.time_zone,
            "max_deferrals": self.max_deferrals,
            "windows": [
                {"cron": w.cron, "duration_s": w.duration_seconds, "time_zone": w.time_zone}
                for w in self.windows
            ],
        }


NO_SCHEDULE = Schedule()


def parse_schedule(body: object) -> Schedule:
    """The ``schedule`` of a desired state (absent or null: no schedule); FormatError if bad."""
    if body is None:
        return NO_SCHEDULE
    if not isinstance(body, Mapping):
        raise FormatError("desired state 'schedule' must be an object")
    zone = body.get("time_zone")
    max_deferrals = body.get("max_deferrals", 0)
    raw_windows = body.get("windows", [])
    if zone is not None and not isinstance(zone, str):
        raise FormatError("schedule 'time_zone' must be a string")
    if not isinstance(max_deferrals, int) or max_deferrals < 0:
        raise FormatError("schedule 'max_deferrals' must be an integer >= 0")
    if not isinstance(raw_windows, list):
        raise FormatError("schedule 'windows' must be a list")
    windows = []
    for i, raw in enumerate(raw_windows):
        if not isinstance(raw, Mapping):
            raise FormatError(f"schedule window {i} must be an object")
        cron, duration, window_zone = raw.get("cron"), raw.get("duration_s"), raw.get("time_zone")
        window_zone = window_zone or zone or "UTC"
        if not isinstance(cron, str) or not isinstance(duration, int):
            raise FormatError(f"schedule window {i} needs a string 'cron', integer 'duration_s'")
        if not isinstance(window_zone, str):
            raise FormatError(f"schedule window {i}: 'time_zone' must be a string")
        try:
            windows.append(MaintenanceWindow(cron, duration, window_zone))
        except ValueError as e:
            # An unknown zone here means this device's tz database lacks it: say so.
            raise FormatError(f"schedule window {i}: {e}") from e
    return Schedule(tuple(windows), max_deferrals, zone)


@dataclass(frozen=True)
class SwitchVerdict:
    switch: bool
    # When the answer may change by time alone: a window start, or the end of a deferral.
    wait_until: datetime | None = None
    reason: str = ""


def switch_verdict(
    policy: str,
    schedule: Schedule,
    deferred_until: datetime | None,
    now: datetime,
    margin_s: float = 0.0,
) -> SwitchVerdict:
    """Whether to switch at ``now``.

    With policy "window" the switch needs a window that is open now and still open
    ``margin_s`` later (room for the restart and the health check), and no deferral running.
    """
    now = as_utc(now)
    if policy == SWITCH_NOW:
        return SwitchVerdict(True, reason="switch policy 'now'")
    windows = schedule.windows
    if deferred_until is not None and now < deferred_until:
        return SwitchVerdict(
            False,
            _next_open(windows, deferred_until, margin_s),
            f"deferred by the device's user until {_iso(deferred_until)}",
        )
    if _open_for(windows, now, margin_s):
        return SwitchVerdict(True, reason="inside a maintenance window")
    start = _next_open(windows, now, margin_s)
    when = "" if start is None else f" at {_iso(start)}"
    return SwitchVerdict(False, start, f"waiting for the next maintenance window{when}")


def _open_for(windows: Sequence[MaintenanceWindow], now: datetime, margin_s: float) -> bool:
    if not windows:
        return True
    later = now + timedelta(seconds=margin_s)
    return any(w.is_open(now) and w.is_open(later) for w in windows)


def _next_open(
    windows: Sequence[MaintenanceWindow], after: datetime, margin_s: float
) -> datetime | None:
    """The first instant at or after ``after`` at which a switch is allowed."""
    if _open_for(windows, after, margin_s):
        return after
    try:
        return next_window_start(windows, after)
    except ValueError:
        return None  # validated crons always open again; a device must not crash over one


def deferral_end(schedule: Schedule, base: datetime, no_window_s: float) -> datetime:
    """Until when one more deferral, made at ``base``, puts the update off: past the window
    open at ``base`` (or the next one), to the start of the window after it."""
    if not schedule.windows:
        return base + timedelta(seconds=no_window_s)
    return next_window_start(schedule.windows, next_allowed_time(schedule.windows, base))


# -- the journaled record ---------------------------------------------------------------
@dataclass
class SwitchWait:
    """A staged release waiting for its switch: what the server said, what the user did."""

    release_id: str
    policy: str = SWITCH_NOW
    schedule: dict[str, Any] = field(default_factory=dict)
    known: bool = False  # policy and schedule came from a check-in for this release
    deferrals_used: int = 0
    deferred_until: str | None = None  # ISO 8601 UTC
    told_until: str | None = None  # the wait last reported with waiting_for_window
    requests_done: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SwitchWait:
        return cls(
            release_id=str(raw["release_id"]),
            policy=str(raw.get("policy", SWITCH_NOW)),
            schedule=dict(raw.get("schedule") or {}),
            known=bool(raw.get("known", False)),
            deferrals_used=int(raw.get("deferrals_used", 0)),
            deferred_until=raw.get("deferred_until"),
            told_until=raw.get("told_until"),
            requests_done=[str(r) for r in raw.get("requests_done", [])],
        )


@dataclass(frozen=True)
class DeferralRequest:
    id: str
    component: str
    release_id: str
    requested_at: str


@dataclass(frozen=True)
class Report:
    """An event for the outbox: name, reason, detail."""

    event: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Review:
    wait: SwitchWait
    verdict: SwitchVerdict
    reports: tuple[Report, ...] = ()
    consumed: tuple[str, ...] = ()  # deferral request ids to delete once journaled

    @property
    def changed(self) -> bool:
        return bool(self.reports or self.consumed)


def review(
    wait: SwitchWait | None,
    release_id: str,
    desired: tuple[str, Schedule] | None,
    requests: Sequence[DeferralRequest],
    now: datetime,
    *,
    margin_s: float = 0.0,
    no_window_deferral_s: float = 86400.0,
) -> Review:
    """Review the staged ``release_id``: may it switch at ``now``?

    ``desired`` is the (switch policy, schedule) the latest check-in gave for this very
    release, or None when there is none (no check-in since a restart, or the server is
    unreachable): then the journaled ones hold. Requests for other releases are dropped.
    """
    now = as_utc(now)
    new = replace(wait) if wait is not None and wait.release_id == release_id else None
    new = new or SwitchWait(release_id)
    new.requests_done = list(new.requests_done)
    if desired is not None:
        new.policy, schedule = desired
        new.schedule, new.known = schedule.to_json(), True
    if not new.known:
        verdict = SwitchVerdict(False, None, "waiting for a check-in to say when to switch")
        return Review(new, verdict)
    schedule = parse_schedule(new.schedule)
    reports: list[Report] = []
    consumed: list[str] = []
    for req in requests:
        consumed.append(req.id)
        if req.release_id != release_id or req.id in new.requests_done:
            continue
        new.requests_done = [*new.requests_done, req.id][-_REQUESTS_REMEMBERED:]
        reports.append(_defer(new, schedule, now, no_window_deferral_s))
    deferred = None if new.deferred_until is None else datetime.fromisoformat(new.deferred_until)
    verdict = switch_verdict(new.policy, schedule, deferred, now, margin_s)
    told = None if verdict.wait_until is None else _iso(verdict.wait_until)
    if not verdict.switch and told != new.told_until:
        new.told_until = told
        reports.append(
            Report("waiting_for_window", verdict.reason, _wait_detail(new, schedule, told, now))
        )
    return Review(new, verdict, tuple(reports), tuple(consumed))


def _defer(wait: SwitchWait, schedule: Schedule, now: datetime, no_window_s: float) -> Report:
    """Apply one deferral request to ``wait`` (in place); the event that reports it."""
    if wait.policy == SWITCH_NOW:
        return Report(
            "deferral_refused",
            "this update is urgent (switch policy 'now'): it cannot be deferred",
            {"deferrals_used": wait.deferrals_used, "max_deferrals": schedule.max_deferrals},
        )
    if not can_defer(wait.deferrals_used, schedule.max_deferrals):
        forced = forced_apply_at(schedule.windows, now, wait.deferrals_used, schedule.max_deferrals)
        when = "" if forced is None else f", at {_iso(forced)}"
        return Report(
            "deferral_refused",
            f"all {schedule.max_deferrals} deferrals are used: the update is applied in the "
            f"next maintenance window{when}",
            {
                "deferrals_used": wait.deferrals_used,
                "max_deferrals": schedule.max_deferrals,
                "forced_apply_at": None if forced is None else _iso(forced),
            },
        )
    current = None if wait.deferred_until is None else datetime.fromisoformat(wait.deferred_until)
    base = max(now, current) if current is not None else now
    until = deferral_end(schedule, base, no_window_s)
    wait.deferrals_used += 1
    wait.deferred_until = _iso(until)
    return Report(
        "deferred",
        f"the device's user deferred the update until {_iso(until)} "
        f"({wait.deferrals_used} of {schedule.max_deferrals} deferrals used)",
        {
            "deferrals_used": wait.deferrals_used,
            "max_deferrals": schedule.max_deferrals,
            "deferred_until": _iso(until),
        },
    )


def _wait_detail(
    wait: SwitchWait, schedule: Schedule, next_start: str | None, now: datetime
) -> dict[str, Any]:
    forced = forced_apply_at(schedule.windows, now, wait.deferrals_used, schedule.max_deferrals)
    return {
        "next_window_start": next_start,
        "deferrals_used": wait.deferrals_used,
        "max_deferrals": schedule.max_deferrals,
        "deferred_until": wait.deferred_until,
        "forced_apply_at": None if forced is None else _iso(forced),
    }


def _iso(when: datetime) -> str:
    return as_utc(when).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- deferral requests on disk -------------------------------------------------------------
def request_deferral(data_dir: Path, component: str, release_id: str, now: datetime) -> str:
    """Drop a deferral request for the agent; return its id (the agent applies it later)."""
    req_id = f"{as_utc(now).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    body = {
        "id": req_id,
        "component": component,
        "release_id": release_id,
        "requested_at": _iso(now),
    }
    atomic_write_text(data_dir / DEFERRALS_DIR / f"{req_id}.json", json.dumps(body), 0o600)
    return req_id


def pending_requests(data_dir: Path, component: str) -> list[DeferralRequest]:
    """The deferral requests for ``component`` waiting in ``data_dir``, oldest first.

    A file that does not parse cannot have come from ``request_deferral`` (it writes
    atomically); it is ignored rather than allowed to stop the update.
    """
    folder = data_dir / DEFERRALS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text("utf-8"))
            req = DeferralRequest(
                str(raw["id"]),
                str(raw["component"]),
                str(raw["release_id"]),
                str(raw["requested_at"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if req.component == component and path.stem == req.id:
            found.append(req)
    return found


def remove_requests(data_dir: Path, ids: Sequence[str]) -> None:
    for req_id in ids:
        (data_dir / DEFERRALS_DIR / f"{req_id}.json").unlink(missing_ok=True)
