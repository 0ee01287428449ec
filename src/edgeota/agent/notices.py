"""Notices: the server says the desired state changed, and the agent checks in at once.

A :class:`NoticeListener` thread asks the server, once the device is enrolled, how it sends
notices (``GET /api/v1/devices/{id}/notices``), then either

- subscribes over MQTT with TLS to ``edgeota/devices/<device id>/notice``, logging in as the
  device (the broker lets each device read only its own topic), or
- long-polls the check-in (``?wait=``) when the server has no broker.

Either way a notice only calls ``wake()``: the agent then checks in as usual, and trusts
nothing the notice says. A notice that is lost costs nothing but time: the agent still
checks in every poll interval. On every (re)connect to the broker the agent is woken too,
since notices sent while it was away are not kept.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgeota.agent.journal import Identity
from edgeota.agent.reporting import AgentStatus, ReportingClient, call_with_backoff
from edgeota.errors import FormatError

log = logging.getLogger(__name__)

_MQTT_KEEPALIVE_S = 60


class NoticeListener:
    """Runs on its own daemon thread until :meth:`stop`."""

    def __init__(
        self,
        api: ReportingClient,
        identity: Callable[[], Identity | None],
        wake: Callable[[], None],
        *,
        status: AgentStatus,
        ca_file: Path | None,
        long_poll_s: int = 30,
    ) -> None:
        self._api = api
        self._identity = identity
        self._wake = wake
        self._status = status
        self._ca_file = ca_file
        self._long_poll_s = long_poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeota-notices", daemon=True)
        self.channel: str | None = None  # "mqtt" or "long_poll" once chosen

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _run(self) -> None:
        ident = self._await_identity()
        if ident is None:
            return
        self._api.set_identity(ident.device_id, ident.credential)
        channel = call_with_backoff(self._api.notice_channel, self._stop)
        if channel is None:
            return
        try:
            mqtt = channel.get("mqtt")
            if isinstance(mqtt, Mapping):
                self.channel = "mqtt"
                self._run_mqtt(mqtt)
                return
            wait_s = min(self._long_poll_s, int(channel.get("long_poll_max_s") or 0))
            if wait_s > 0:
                self.channel = "long_poll"
                self._run_long_poll(wait_s)
        except Exception:
            # A broken notice channel must never take the agent down: it still polls.
            log.exception("notices stopped; the agent keeps checking in on its interval")

    def _await_identity(self) -> Identity | None:
        while not self._stop.is_set():
            ident = self._identity()
            if ident is not None:
                return ident
            self._stop.wait(1.0)
        return None

    # -- HTTP long-poll ----------------------------------------------------------------
    def _run_long_poll(self, wait_s: int) -> None:
        log.info("notices: long-polling the check-in (%d s)", wait_s)
        etag: str | None = None
        while not self._stop.is_set():
            new = call_with_backoff(
                functools.partial(self._api.wait_for_change, etag, wait_s), self._stop
            )
            if new is None:
                continue  # timed out without a change (or stopping)
            if etag is not None:
                self._notice("long_poll")
            etag = new

    # -- MQTT --------------------------------------------------------------------------
    def _run_mqtt(self, cfg: Mapping[str, Any]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        url = urlsplit(str(cfg.get("url", "")))
        topic, username, password = cfg.get("topic"), cfg.get("username"), cfg.get("password")
        if (
            url.scheme != "mqtts"
            or not url.hostname
            or not all(isinstance(v, str) and v for v in (topic, username, password))
        ):
            raise FormatError(f"notice channel: unusable MQTT settings for {url.geturl()!r}")
        assert isinstance(topic, str) and isinstance(username, str)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=mqtt.MQTTv311
        )
        context = ssl.create_default_context(
            cafile=None if self._ca_file is None else str(self._ca_file)
        )
        client.tls_set_context(context)
        client.username_pw_set(username, str(password))
        client.reconnect_delay_set(1, 60)

        def on_connect(c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
            if reason.is_failure:
                log.warning("notices: the broker refused the device: %s", reason)
                return
            c.subscribe(topic, qos=1)

        def on_subscribe(
            _c: mqtt.Client, _u: object, _mid: int, reasons: list[Any], _p: object
        ) -> None:
            if any(r.is_failure for r in reasons):
                log.warning("notices: the broker refused the subscription to %s", topic)
                return
            log.info("notices: subscribed to %s", topic)
            # Notices sent while the agent was not subscribed are gone: check in now.
            self._notice("mqtt_connect")

        def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
            if message.topic == topic:
                self._notice("mqtt")

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect_async(url.hostname, url.port or 8883, keepalive=_MQTT_KEEPALIVE_S)
        client.loop_start()
        try:
            self._stop.wait()
        finally:
            client.disconnect()
            client.loop_stop()

    def _notice(self, channel: str) -> None:
        self._status.notice(channel)
        self._wake()
