"""Notices over MQTT with TLS: topics, per-device broker credentials, and the publisher.

Each device reads only ``edgeota/devices/<device id>/notice``, logging in with its device id
as user name and a password the server derives from a key of its own
(``HMAC-SHA256(key, device id)``). So the server can hand a device its password over the
authenticated API at any time, and write the broker's password file and ACL from the
database (:func:`password_file`, :func:`acl_file`) without storing a password per device.

The files are in mosquitto's formats: ``user:$7$<iterations>$<salt>$<PBKDF2-SHA512>`` lines,
and an ACL whose ``pattern`` lets each user read its own topic tree. A notice carries no
state: it only makes the device check in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from urllib.parse import urlsplit

from edgeota.timeutil import utcnow

log = logging.getLogger(__name__)

TOPIC_ROOT = "edgeota/devices"
# mosquitto's own default. The passwords are 256-bit random values: there is nothing to
# brute-force, and a fleet's password file is rewritten in seconds.
_PBKDF2_ITERATIONS = 101
_QUEUED_NOTICES = 10_000  # held while the broker is unreachable; older ones are dropped


def notice_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/notice"


def device_password(key: bytes, device_id: str) -> str:
    mac = hmac.new(key, b"edgeota-mqtt:" + device_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def password_hash(password: str, salt: bytes | None = None) -> str:
    """mosquitto's ``$7$`` (PBKDF2-SHA512) hash of ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${_PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def password_file(users: Iterable[tuple[str, str]]) -> str:
    """A mosquitto ``password_file`` for (user name, password) pairs."""
    return "".join(f"{user}:{password_hash(password)}\n" for user, password in users)


def acl_file(server_user: str) -> str:
    """A mosquitto ``acl_file``: each device reads its own topics, the server writes notices."""
    return (
        "# Written by edgeota: devices (user name = device id) read only their own topics.\n"
        f"pattern read {TOPIC_ROOT}/%u/#\n"
        "\n"
        f"user {server_user}\n"
        f"topic write {TOPIC_ROOT}/+/notice\n"
    )


class MqttPublisher:
    """The server's connection to the broker; :meth:`publish` may be called from any thread.

    paho's network thread reconnects by itself; notices published meanwhile are queued
    (QoS 1) up to a bound.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str,
        password: str,
        ca_file: Path | None,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        parts = urlsplit(url)
        if parts.scheme != "mqtts" or not parts.hostname:
            raise ValueError(f"broker URL {url!r}: use mqtts://host:port")
        self._host, self._port = parts.hostname, parts.port or 8883
        client_id = f"{username}-{secrets.token_hex(4)}"  # one per server process
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
        self._client.tls_set_context(context)
        self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(1, 30)
        self._client.max_queued_messages_set(_QUEUED_NOTICES)
        self._client.on_connect = self._on_connect
        self.connected = threading.Event()

    def _on_connect(self, _c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        failed = bool(getattr(reason, "is_failure", False))
        if failed:
            log.warning("MQTT broker %s:%d refused the server: %s", self._host, self._port, reason)
            self.connected.clear()
        else:
            log.info("publishing notices to MQTT broker %s:%d", self._host, self._port)
            self.connected.set()

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=60)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, device_ids: Collection[str]) -> None:
        payload = json.dumps({"desired_state_changed": True, "time": utcnow().isoformat()})
        for device_id in sorted(device_ids):
            self._client.publish(notice_topic(device_id), payload, qos=1)
