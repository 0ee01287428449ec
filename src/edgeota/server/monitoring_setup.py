"""Wiring of metrics and notices into an app's context (called by ``create_app``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from edgeota.server import notices
from edgeota.server.context import AppContext
from edgeota.server.mqtt_notices import MqttPublisher
from edgeota.server.serverkeys import server_key


def prepare(ctx: AppContext) -> None:
    """At app creation: keys, the change feed, the fleet metrics."""
    s = ctx.settings
    ctx.mqtt_device_key = server_key(s.secrets_dir, "mqtt-device", s.mqtt_device_key)
    ctx.session_key = server_key(s.secrets_dir, "session", s.session_secret)
    notices.track_revision_changes()
    ctx.changes.attach(ctx.sessions)
    ctx.changes.subscribe(ctx.waiters.notify)
    ctx.metrics.attach_fleet(ctx.sessions)
    ctx.metrics.long_polls.set_function(lambda: ctx.waiters.waiting)
    ctx.metrics.db_admitted.set_function(lambda: ctx.db_admission.inside)
    ctx.metrics.db_queued.set_function(lambda: ctx.db_admission.queued)


def start(ctx: AppContext) -> Callable[[], None]:
    """At app start-up (in its event loop): long-poll waiters and the MQTT publisher.

    Returns what stops them again.
    """
    ctx.waiters.bind(asyncio.get_running_loop())
    s = ctx.settings
    publisher: MqttPublisher | None = None
    if s.mqtt_url is not None and s.mqtt_password is not None:
        publisher = MqttPublisher(
            s.mqtt_url,
            username=s.mqtt_username,
            password=s.mqtt_password.get_secret_value(),
            ca_file=s.mqtt_ca_file,
        )
        ctx.changes.subscribe(_counting(publisher.publish, ctx))
        publisher.start()

    def stop() -> None:
        ctx.waiters.wake_all()
        if publisher is not None:
            publisher.stop()

    return stop


def _counting(
    publish: Callable[[Collection[str]], None], ctx: AppContext
) -> Callable[[Collection[str]], None]:
    sent = ctx.metrics.notices.labels("mqtt")

    def publish_and_count(device_ids: Collection[str]) -> None:
        publish(device_ids)
        sent.inc(len(device_ids))

    return publish_and_count
