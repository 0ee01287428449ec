"""The agent's local API, for the device's user and for monitoring (loopback only).

    GET  /healthz       200 {"status": "ok", "device_id"}
    GET  /metrics       Prometheus text: state per component, updates, failures, check-ins
    GET  /v1/updates    {"updates": [...]}: what is coming, when, its size, expected downtime
    POST /v1/defer      {"component"}: put the waiting update off once (within the policy)
    POST /v1/feedback   {"rating": 1-5, "comment": "...", "release_id" or "component"}

It is the agent's API rather than the runtime's: the agent knows what is desired, what is
installed, the maintenance windows and deferrals, and it holds the credential that sends
feedback; and it keeps answering while the runtime restarts for an update, which is exactly
when a user asks. Errors are JSON ``{"error": message}`` with 400, 404, 409 or 413.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from edgeota import __version__
from edgeota.agent import agent_metrics, schedule
from edgeota.agent.api_client import DesiredComponent, DesiredState
from edgeota.agent.config import AgentConfig
from edgeota.agent.feedback_outbox import FeedbackError, FeedbackOutbox, validate
from edgeota.agent.journal import ComponentRecord, Journal
from edgeota.agent.reporting import AgentStatus
from edgeota.agent.statemachine import State
from edgeota.rollout.windows import can_defer
from edgeota.runtime.resources import peak_rss_mb, resident_mb

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
# Shown as the expected downtime until this device has timed a switch of the component: the
# runtime restarts on the new model and is health-checked before the update is committed.
DEFAULT_DOWNTIME_S = 10.0


class AgentView(Protocol):
    """What the local API reads from the running agent (``reconcile.Agent``)."""

    config: AgentConfig
    desired: DesiredState | None
    journal: Journal

    def wake(self) -> None: ...


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class LocalApi:
    agent: AgentView
    status: AgentStatus
    outbox: FeedbackOutbox
    send_feedback: Callable[[], object] = lambda: None  # flushes the outbox, may be slow
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    # -- reads -------------------------------------------------------------------------
    def updates(self) -> list[dict[str, Any]]:
        desired = self.agent.desired
        if desired is None:
            return []
        components = dict(self.agent.journal.components)
        return [
            entry
            for name, wanted in sorted(desired.components.items())
            if (entry := self._upcoming(name, wanted, components.get(name), desired)) is not None
        ]

    def _upcoming(
        self,
        name: str,
        wanted: DesiredComponent,
        rec: ComponentRecord | None,
        desired: DesiredState,
    ) -> dict[str, Any] | None:
        if rec is not None and rec.committed and rec.committed.release_id == wanted.release_id:
            return None  # installed
        if rec is not None and wanted.release_id in rec.failed_release_ids:
            return None  # failed here before: it will not be installed
        sched = desired.schedule
        wait = rec.wait if rec is not None else None
        if wait is not None and wait.release_id != wanted.release_id:
            wait = None
        used = wait.deferrals_used if wait is not None else 0
        until = None
        if wait is not None and wait.deferred_until:
            until = datetime.fromisoformat(wait.deferred_until)
        now = self.now()
        verdict = schedule.switch_verdict(
            wanted.switch_policy, sched, until, now, self.agent.config.switch_margin_s
        )
        state = "waiting" if rec is None or rec.state is State.IDLE else rec.state.value
        return {
            "component": name,
            "version": wanted.version,
            "release_id": wanted.release_id,
            "installed_version": rec.committed.version if rec and rec.committed else None,
            "size_bytes": wanted.size_bytes,
            "state": state,
            "switch_policy": wanted.switch_policy,
            "switch_at": _iso(now if verdict.switch else verdict.wait_until),
            "why": verdict.reason,
            "expected_downtime_s": self.status.snapshot().downtime_s.get(name, DEFAULT_DOWNTIME_S),
            "deferrals_used": used,
            "max_deferrals": sched.max_deferrals,
            "can_defer": wanted.switch_policy != schedule.SWITCH_NOW
            and can_defer(used, sched.max_deferrals),
            "deferred_until": _iso(until),
        }

    def metrics(self) -> str:
        journal = self.agent.journal
        memory = agent_metrics.Memory(resident_mb(), peak_rss_mb())
        return agent_metrics.render(
            self.status, dict(journal.components), len(journal.outbox), time.time(), memory
        )

    # -- actions -----------------------------------------------------------------------
    def defer(self, body: Mapping[str, Any]) -> dict[str, Any]:
        component = body.get("component")
        if not isinstance(component, str) or set(body) - {"component"}:
            raise ApiError(HTTPStatus.BAD_REQUEST, 'send {"component": "<name>"}')
        entry = next((u for u in self.updates() if u["component"] == component), None)
        if entry is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no update of {component!r} is waiting")
        if entry["switch_policy"] == schedule.SWITCH_NOW:
            raise ApiError(
                HTTPStatus.CONFLICT, "this update is urgent (switch policy 'now'): it cannot wait"
            )
        if not entry["can_defer"]:
            raise ApiError(
                HTTPStatus.CONFLICT,
                f"all {entry['max_deferrals']} deferrals are used: the update is applied in "
                "the next maintenance window",
            )
        request_id = schedule.request_deferral(
            self.agent.config.data_dir, component, entry["release_id"], self.now()
        )
        self.agent.wake()  # the agent applies the request when it next reviews the update
        return {
            "request_id": request_id,
            "component": component,
            "release_id": entry["release_id"],
            "note": "the agent applies the deferral at its next pass; see GET /v1/updates",
        }

    def feedback(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            rating, comment = validate(body)
        except FeedbackError as e:
            raise ApiError(HTTPStatus.BAD_REQUEST, str(e)) from e
        release_id = self._release_for(body)
        report = self.outbox.add(release_id, rating, comment)
        threading.Thread(target=self.send_feedback, daemon=True).start()
        return {"client_id": report["client_id"], "release_id": release_id, "queued": True}

    def _release_for(self, body: Mapping[str, Any]) -> str:
        """The release named, or the installed release of the component named."""
        release_id = body.get("release_id")
        if isinstance(release_id, str) and 0 < len(release_id) <= 64:
            return release_id
        component = body.get("component")
        rec = self.agent.journal.components.get(component) if isinstance(component, str) else None
        if rec is None or rec.committed is None:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "name the release the feedback is about: 'release_id', or the 'component' "
                "whose installed release it is",
            )
        return rec.committed.release_id


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: LocalApi) -> None:
        self.api = api
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"edgeota-agent/{__version__}"
    timeout = 30

    @property
    def _api(self) -> LocalApi:
        assert isinstance(self.server, LocalApiServer)
        return self.server.api

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("local API %s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: object) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            ident = self._api.agent.journal.identity
            self._json(200, {"status": "ok", "device_id": ident.device_id if ident else None})
        elif path == "/metrics":
            self._send(200, self._api.metrics().encode(), agent_metrics.CONTENT_TYPE)
        elif path == "/v1/updates":
            self._json(200, {"updates": self._api.updates()})
        else:
            self._json(404, {"error": f"no such endpoint: {path}"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        actions = {"/v1/defer": self._api.defer, "/v1/feedback": self._api.feedback}
        action = actions.get(path)
        if action is None:
            self._json(404, {"error": f"no such endpoint for POST: {path}"})
            return
        try:
            result = action(self._body())
        except ApiError as e:
            self._json(e.status, {"error": str(e)})
            return
        self._json(202, result)

    def _body(self) -> Mapping[str, Any]:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        try:
            body = json.loads(self.rfile.read(int(length)) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {e}") from e
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return body


def start_local_api(api: LocalApi, host: str, port: int) -> LocalApiServer | None:
    """Serve ``api`` on a daemon thread; None (and a warning) if the port cannot be bound:
    the update agent runs on without its local API."""
    try:
        server = LocalApiServer((host, port), api)
    except OSError as e:
        log.warning("local API not started on %s:%d: %s", host, port, e)
        return None
    threading.Thread(target=server.serve_forever, name="edgeota-local-api", daemon=True).start()
    log.info("local API on http://%s:%d", host, server.port)
    return server
