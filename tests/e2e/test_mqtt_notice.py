"""Notices over MQTT with TLS, through a real mosquitto this test starts and configures.

The broker gets its certificate from the test's own CA and its password and ACL files from
the server (``GET /api/v1/mqtt/auth-files``), reloaded with SIGHUP as devices are enrolled
or revoked, the way a production broker is kept in step.
"""

from __future__ import annotations

import getpass
import json
import queue
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.procs import ProcessGroup, free_port, wait_until
from edgeota.releasefolder import load_release
from edgeota.server.devcerts import DevCertificates, make_dev_certificates
from edgeota.server.mqtt_notices import acl_file, notice_topic, password_file
from harness import ServerHandle, start_server
from support import skip_or_fail

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SERVER_USER = "edgeota-server"
POLL_INTERVAL_S = 3600  # the agent must not wait for this


@dataclass
class Broker:
    port: int
    process: subprocess.Popen[bytes]
    folder: Path
    ca: Path

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def write_auth(self, passwd: str, acl: str) -> None:
        (self.folder / "passwd").write_text(passwd)
        (self.folder / "acl").write_text(acl)

    def reload(self) -> None:
        self.process.send_signal(signal.SIGHUP)


@dataclass
class Setup:
    server: ServerHandle
    broker: Broker
    server_password: str
    certs: DevCertificates
    procs: ProcessGroup
    work: Path

    def enroll(self, name: str, group: str) -> dict[str, str]:
        token = self.server.admin.enrollment_token([group])
        r = httpx.post(
            f"{self.server.url}/api/v1/enroll",
            json={"enrollment_token": token, "name": name, "hardware_class": "x86-64-test"},
            verify=self.server.ssl_context(),
        )
        assert r.status_code == 201, r.text
        body: dict[str, str] = r.json()
        return body

    def notice_channel(self, device: dict[str, str]) -> dict[str, Any]:
        r = httpx.get(
            f"{self.server.url}/api/v1/devices/{device['device_id']}/notices",
            headers={"Authorization": f"Bearer {device['credential']}"},
            verify=self.server.ssl_context(),
        )
        assert r.status_code == 200, r.text
        mqtt: dict[str, Any] = r.json()["mqtt"]
        return mqtt

    def sync_broker(self) -> None:
        """Write the broker's files from the server's list of devices, and reload them."""
        files = self.server.admin.mqtt_auth_files()
        self.broker.write_auth(files["password_file"], files["acl_file"])
        self.broker.reload()


def _need_system_parts() -> None:
    if not Path(MOSQUITTO).exists():
        skip_or_fail(f"mosquitto is not installed ({MOSQUITTO}); apt-get install mosquitto")
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        skip_or_fail("paho-mqtt is not installed; pip install paho-mqtt")


def _start_broker(procs: ProcessGroup, work: Path, certs: DevCertificates, pw: str) -> Broker:
    folder, port = work / "broker", free_port()
    folder.mkdir()
    (folder / "passwd").write_text(password_file([(SERVER_USER, pw)]))
    (folder / "acl").write_text(acl_file(SERVER_USER))
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {certs.ca_cert}\ncertfile {certs.server_cert}\nkeyfile {certs.server_key}\n"
        f"password_file {folder / 'passwd'}\nacl_file {folder / 'acl'}\n"
        "allow_anonymous false\npersistence false\nlog_dest stderr\nlog_type all\n"
        # Started as root, mosquitto would drop to a user that cannot read the test's files.
        f"user {getpass.getuser()}\n"
    )
    log = work / "mosquitto.log"
    process = procs.start([MOSQUITTO, "-c", str(conf)], log)
    broker = Broker(port, process, folder, certs.ca_cert)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {log.read_text()}")
        return _connects(broker, SERVER_USER, pw)[0]

    wait_until(up, 30, what=f"mosquitto on {port}")
    return broker


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    _need_system_parts()
    certs = make_dev_certificates(tmp_path / "certs")
    pw = secrets.token_urlsafe(24)
    with ProcessGroup() as procs:
        broker = _start_broker(procs, tmp_path, certs, pw)
        env = {
            "EDGEOTA_MQTT_URL": broker.url,
            "EDGEOTA_MQTT_PASSWORD": pw,
            "EDGEOTA_MQTT_CA_FILE": str(certs.ca_cert),
        }
        server = start_server(procs, tmp_path, certs, env=env)
        try:
            yield Setup(server, broker, pw, certs, procs, tmp_path)
        finally:
            server.admin.close()


class Subscriber:
    """A paho client: what it was told when connecting and subscribing, what it received."""

    def __init__(self, broker: Broker, username: str, password: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.connected: queue.Queue[Any] = queue.Queue()
        self.subscribed: queue.Queue[Any] = queue.Queue()
        self.messages: queue.Queue[Any] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{username}-test-{secrets.token_hex(3)}",
            protocol=mqtt.MQTTv311,
        )
        self.client.tls_set_context(ssl.create_default_context(cafile=str(broker.ca)))
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connected.put(reason)
        self.client.on_subscribe = lambda _c, _u, _m, reasons, _p: self.subscribed.put(reasons)
        self.client.on_message = lambda _c, _u, message: self.messages.put(message)
        self.client.connect_async("127.0.0.1", broker.port)
        self.client.loop_start()
        self.reason = self.connected.get(timeout=15)

    @property
    def ok(self) -> bool:
        return not self.reason.is_failure

    def subscribe(self, topic: str) -> bool:
        """True if the broker granted the subscription."""
        self.client.subscribe(topic, qos=1)
        reasons = self.subscribed.get(timeout=15)
        return not any(r.is_failure for r in reasons)

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(15)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _connects(broker: Broker, username: str, password: str) -> tuple[bool, str]:
    try:
        sub = Subscriber(broker, username, password)
    except queue.Empty:
        return False, "no answer"
    sub.close()
    return sub.ok, str(sub.reason)


def _agent_metrics(port: int) -> dict[str, float]:
    """The agent's /metrics: each family's total, and each sample as ``name{label=value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            found[f"{s.name}{{{labels}}}"] = s.value
            found[s.name] = found.get(s.name, 0.0) + s.value
    return found


def test_a_notice_starts_the_update_at_once_not_after_the_poll_interval(setup: Setup) -> None:
    device = setup.enroll("notice-dev", "lab")
    setup.sync_broker()
    channel = setup.notice_channel(device)
    wait_until(
        lambda: _connects(setup.broker, device["device_id"], channel["password"])[0],
        30,
        what="the broker knows the device",
    )
    data_dir = setup.work / "notice-dev"
    data_dir.mkdir()
    identity = {"device_id": device["device_id"], "credential": device["credential"]}
    (data_dir / "identity.json").write_text(json.dumps(identity))
    api_port = free_port()
    agent = setup.procs.start(
        [
            *_agent_argv(setup, data_dir),
            "--local-api-port",
            str(api_port),
        ],
        setup.work / "agent.log",
    )

    def subscribed_and_idle() -> bool:
        if agent.poll() is not None:
            raise AssertionError(f"agent exited: {(setup.work / 'agent.log').read_text()}")
        try:
            m = _agent_metrics(api_port)
        except httpx.HTTPError:
            return False
        # One check-in at start, one when the subscription stood: then it waits an hour.
        return (
            m.get("edgeota_agent_notices_total", 0) >= 1
            and m.get("edgeota_agent_checkins_total", 0) >= 2
        )

    wait_until(subscribed_and_idle, 60, interval_s=0.2, what="the agent subscribed")
    before = _agent_metrics(api_port)

    folder = setup.work / "release"
    folder.mkdir()
    (folder / "settings.json").write_text('{"denoise_strength": 0.4}\n')
    release = setup.server.admin.publish(load_release(folder / "settings.json"), "config", "1.0.0")
    start = time.monotonic()
    setup.server.admin.deploy(release["id"], "lab")

    def committed() -> bool:
        events = setup.server.admin.events(device["device_id"], 100)
        return any(e["event"] == "committed" and e["release_id"] == release["id"] for e in events)

    wait_until(committed, 60, interval_s=0.2, what="the update committed")
    took = time.monotonic() - start
    assert took < 30  # an hour would pass before the next check-in without the notice
    after = _agent_metrics(api_port)
    mqtt_key = "edgeota_agent_notices_total{channel=mqtt}"
    assert after.get(mqtt_key, 0) >= before.get(mqtt_key, 0) + 1, after
    log = (setup.work / "agent.log").read_text()
    assert "notices: subscribed to " + notice_topic(device["device_id"]) in log


def _agent_argv(setup: Setup, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeota",
        "agent",
        "--server",
        setup.server.url,
        "--data-dir",
        str(data_dir),
        "--root",
        str(setup.server.root),
        "--ca",
        str(setup.certs.ca_cert),
        "--hardware-class",
        "x86-64-test",
        "--runtime-port",
        str(free_port()),
        "--poll-interval",
        str(POLL_INTERVAL_S),
    ]


def test_a_device_reads_only_its_own_topic(setup: Setup) -> None:
    a, b = setup.enroll("dev-a", "lab"), setup.enroll("dev-b", "lab")
    setup.sync_broker()
    pa, pb = setup.notice_channel(a)["password"], setup.notice_channel(b)["password"]
    wait_until(lambda: _connects(setup.broker, b["device_id"], pb)[0], 30, what="broker reload")
    spy = Subscriber(setup.broker, a["device_id"], pa)
    owner = Subscriber(setup.broker, b["device_id"], pb)
    server = Subscriber(setup.broker, SERVER_USER, setup.server_password)
    try:
        assert spy.ok and owner.ok and server.ok
        b_topic = notice_topic(b["device_id"])
        # mosquitto 2.0 may grant these subscriptions; the ACL is applied to every delivery.
        spy.subscribe(b_topic)
        spy.subscribe("edgeota/devices/#")
        assert owner.subscribe(b_topic)
        assert spy.subscribe(notice_topic(a["device_id"]))
        spy.publish(b_topic, "forged by A")  # devices may not write notices
        server.publish(b_topic, "for B only")
        got = owner.messages.get(timeout=15)
        assert got.payload == b"for B only"
        with pytest.raises(queue.Empty):
            spy.messages.get(timeout=2)
        with pytest.raises(queue.Empty):
            owner.messages.get(timeout=1)  # A's forged notice never arrived
    finally:
        for client in (spy, owner, server):
            client.close()


def test_wrong_unknown_and_revoked_credentials_are_refused(setup: Setup) -> None:
    a, b = setup.enroll("dev-a", "lab"), setup.enroll("dev-b", "lab")
    setup.sync_broker()
    pa, pb = setup.notice_channel(a)["password"], setup.notice_channel(b)["password"]
    wait_until(lambda: _connects(setup.broker, b["device_id"], pb)[0], 30, what="broker reload")
    ok, reason = _connects(setup.broker, a["device_id"], pb)  # B's password for A
    assert not ok, reason
    assert not _connects(setup.broker, a["device_id"], pa + "x")[0]
    assert not _connects(setup.broker, "dev-0000000000000000", pa)[0]
    assert not _connects(setup.broker, SERVER_USER, "not the server's password")[0]
    setup.server.admin.revoke(b["device_id"])
    setup.sync_broker()
    wait_until(lambda: not _connects(setup.broker, b["device_id"], pb)[0], 30, what="B refused")
    assert _connects(setup.broker, a["device_id"], pa)[0]
