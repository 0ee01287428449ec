"""How devices hear about changes (their notice channel), and the broker's auth files."""

from __future__ import annotations

from fastapi import APIRouter

from edgeota.server import mqtt_notices
from edgeota.server.deps import AdminDep, ContextDep, DeviceDep, SessionDep
from edgeota.server.schemas_monitoring import (
    MqttAuthFilesPublic,
    MqttNoticePublic,
    NoticeChannelPublic,
)
from edgeota.server.services import devices

router = APIRouter(prefix="/api/v1", tags=["notices"])


@router.get("/devices/{device_id}/notices", response_model=NoticeChannelPublic)
def notice_channel(device_id: str, device: DeviceDep, ctx: ContextDep) -> NoticeChannelPublic:
    """The broker, topic and credentials of the device's notices, if the server has a
    broker; else how long its check-in may long-poll."""
    devices.require_self(device, device_id)
    s = ctx.settings
    url = s.mqtt_device_url or s.mqtt_url
    mqtt = None
    if url is not None:
        mqtt = MqttNoticePublic(
            url=url,
            topic=mqtt_notices.notice_topic(device.id),
            username=device.id,
            password=mqtt_notices.device_password(ctx.mqtt_device_key, device.id),
        )
    return NoticeChannelPublic(mqtt=mqtt, long_poll_max_s=s.long_poll_max_s)


@router.get("/mqtt/auth-files", response_model=MqttAuthFilesPublic)
def mqtt_auth_files(_: AdminDep, session: SessionDep, ctx: ContextDep) -> MqttAuthFilesPublic:
    """A mosquitto ``password_file`` and ``acl_file`` for every unrevoked device (and the
    server's own user, if its password is set). Rewrite them after enrolling or revoking
    devices, then send the broker SIGHUP."""
    s = ctx.settings
    ids = [d.id for d in devices.list_all(session) if d.revoked_at is None]
    users = [(d, mqtt_notices.device_password(ctx.mqtt_device_key, d)) for d in ids]
    if s.mqtt_password is not None:
        users.insert(0, (s.mqtt_username, s.mqtt_password.get_secret_value()))
    return MqttAuthFilesPublic(
        password_file=mqtt_notices.password_file(users),
        acl_file=mqtt_notices.acl_file(s.mqtt_username),
        devices=len(ids),
    )
