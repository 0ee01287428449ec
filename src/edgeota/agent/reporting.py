"""What the agent tells besides its events: its status for the local API, and failure logs.

:class:`ReportingClient` is the agent's API client with a few more calls (notice channel,
long-poll, feedback, log upload); it also watches the check-ins and the events passing
through it, which is how :class:`AgentStatus` learns about updates without the update
logic knowing about it. When an event says an update failed, the tail of the agent's log is
uploaded for that update (best effort: a log that cannot be sent is not retried).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeota.agent import agentlog
from edgeota.agent.api_client import ApiClient, DesiredState, parse_desired_state
from edgeota.errors import EdgeotaError, FormatError

log = logging.getLogger(__name__)

# Events after which the device uploads its log for that update.
UPLOAD_LOG_EVENTS = frozenset({"rolled_back", "download_failed", "stage_invalid"})
# Events that end an update, and how the status counts them.
_OUTCOMES = {
    "committed": "committed",
    "rolled_back": "rolled_back",
    "download_failed": "failed",
    "stage_invalid": "failed",
}
_FAILURES = frozenset(
    {
        *UPLOAD_LOG_EVENTS,
        "update_refused",
        "health_failed",
        "attempts_exhausted",
        "runtime_crash_loop",
    }
)


@dataclass
class AgentStatus:
    """Counters and times for the local API; every method is safe to call from any thread."""

    checkins: Counter[str] = field(default_factory=Counter)  # changed | unchanged | failed
    updates: Counter[tuple[str, str]] = field(default_factory=Counter)  # (component, outcome)
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (component, event)
    notices: Counter[str] = field(default_factory=Counter)  # by channel
    last_checkin_unix_s: float | None = None  # last check-in the server answered
    downtime_s: dict[str, float] = field(default_factory=dict)  # last switch to commit
    _switched_at: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _seen_seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def checkin(self, result: str) -> None:
        with self._lock:
            self.checkins[result] += 1
            if result != "failed":
                self.last_checkin_unix_s = time.time()

    def notice(self, channel: str) -> None:
        with self._lock:
            self.notices[channel] += 1

    def observe(self, events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Count events the server accepted; return those not seen before (by seq)."""
        fresh = []
        with self._lock:
            for e in sorted(events, key=lambda e: int(e["seq"])):
                if int(e["seq"]) <= self._seen_seq:
                    continue
                self._seen_seq = int(e["seq"])
                fresh.append(e)
                self._count(e)
        return fresh

    def _count(self, e: Mapping[str, Any]) -> None:
        component, name = str(e.get("component") or ""), str(e["event"])
        outcome = _OUTCOMES.get(name)
        if outcome is not None:
            self.updates[(component, outcome)] += 1
        if name in _FAILURES:
            self.failures[(component, name)] += 1
        key = (component, str(e.get("release_id")))
        when = _parse_time(e.get("time"))
        if name == "switched" and when is not None:
            self._switched_at[key] = when
        elif name == "committed" and when is not None and key in self._switched_at:
            self.downtime_s[component] = (when - self._switched_at.pop(key)).total_seconds()

    def snapshot(self) -> AgentStatus:
        with self._lock:
            return AgentStatus(
                checkins=Counter(self.checkins),
                updates=Counter(self.updates),
                failures=Counter(self.failures),
                notices=Counter(self.notices),
                last_checkin_unix_s=self.last_checkin_unix_s,
                downtime_s=dict(self.downtime_s),
            )


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class ReportingClient(ApiClient):
    """The device API, watched for the agent's status, with the monitoring calls."""

    def __init__(
        self,
        server_url: str,
        client: Any,
        *,
        status: AgentStatus | None = None,
        data_dir: Path | None = None,
        log_cap_bytes: int = agentlog.UPLOAD_CAP_BYTES,
    ) -> None:
        super().__init__(server_url, client)
        self.status = status or AgentStatus()
        self._data_dir = data_dir  # None: no log uploads
        self._log_cap = log_cap_bytes
        self._uploaded: set[tuple[str, str, str]] = set()

    # -- watched calls -----------------------------------------------------------------
    def desired_state(self, etag: str | None) -> DesiredState | None:
        try:
            state = super().desired_state(etag)
        except EdgeotaError:
            self.status.checkin("failed")
            raise
        self.status.checkin("unchanged" if state is None else "changed")
        return state

    def post_events(self, events: Sequence[Mapping[str, Any]]) -> int:
        through = super().post_events(events)
        fresh = self.status.observe([e for e in events if int(e["seq"]) <= through])
        for e in fresh:
            if e["event"] in UPLOAD_LOG_EVENTS:
                self._upload_log(e)
        return through

    # -- monitoring calls --------------------------------------------------------------
    def notice_channel(self) -> dict[str, Any]:
        """How this device hears about changes: ``{"mqtt": {...} | None, "long_poll_max_s"}``."""
        resp = self._request("GET", f"{self._device_path()}/notices")
        return _object(resp.json, "notice channel")

    def wait_for_change(self, etag: str | None, wait_s: int) -> str | None:
        """Long-poll the desired state: its new ETag once it differs from ``etag``, None if
        ``wait_s`` passed without a change."""
        headers = {"If-None-Match": etag} if etag else {}
        resp = self._request(
            "GET",
            f"{self._device_path()}/desired-state",
            headers=headers,
            params={"wait": str(wait_s)},
            ok=(200, 304),
            timeout_s=wait_s + 30.0,
        )
        if resp.status_code == 304:
            return None
        parse_desired_state(_object(resp.json, "desired state"), resp.headers.get("etag"))
        return resp.headers.get("etag") or ""

    def post_feedback(self, report: Mapping[str, Any]) -> dict[str, Any]:
        resp = self._request(
            "POST", f"{self._device_path()}/feedback", json=dict(report), ok=(200, 201)
        )
        return _object(resp.json, "feedback")

    def post_log(
        self, text: str, *, component: str | None, release_id: str | None, event: str | None
    ) -> None:
        params = {
            k: v
            for k, v in (("component", component), ("release_id", release_id), ("event", event))
            if v
        }
        self._request(
            "POST",
            f"{self._device_path()}/logs",
            content=text.encode("utf-8"),
            headers={"Content-Type": "text/plain; charset=utf-8"},
            params=params,
            ok=(201,),
        )

    def _upload_log(self, event: Mapping[str, Any]) -> None:
        if self._data_dir is None:
            return
        component = event.get("component")
        key = (str(component), str(event.get("release_id")), str(event["event"]))
        if key in self._uploaded:
            return  # one log per failure kind of a release: a flapping network sends one
        self._uploaded.add(key)
        text = agentlog.failure_report(self._data_dir, component, self._log_cap)
        text = text.encode("utf-8")[: self._log_cap].decode("utf-8", errors="ignore")
        if not text:
            return
        try:
            self.post_log(
                text,
                component=component,
                release_id=event.get("release_id"),
                event=str(event["event"]),
            )
            log.info("uploaded the agent log after %s of %s", event["event"], key[1])
        except EdgeotaError as e:
            log.warning("could not upload the agent log after %s: %s", event["event"], e)


def _object(read: Callable[[], Any], what: str) -> dict[str, Any]:
    try:
        body = read()
    except ValueError as e:
        raise FormatError(f"{what} answer is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise FormatError(f"{what} answer is {type(body).__name__}, not an object")
    return body


def call_with_backoff(
    call: Callable[[], Any], stop: threading.Event, *, first_s: float = 1.0, max_s: float = 60.0
) -> Any:
    """``call()`` until it succeeds or ``stop`` is set (then None); EdgeotaErrors retried."""
    delay = first_s
    while not stop.is_set():
        try:
            return call()
        except EdgeotaError as e:
            log.debug("retrying in %.0f s: %s", delay, e)
        stop.wait(delay)
        delay = min(max_s, delay * 2)
    return None
