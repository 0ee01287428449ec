"""The device side of the protocol, against httpx.MockTransport."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeota.agent.api_client import (
    ApiClient,
    CredentialError,
    build_inventory,
    inventory_digest,
    make_http_client,
)
from edgeota.agent.journal import ComponentRecord, ReleaseRef
from edgeota.errors import FormatError, HTTPStatusError, TransportError

DESIRED = {
    "revision": 7,
    "poll_interval_s": 30,
    "components": {
        "denoiser": {
            "release_id": "rel-1",
            "version": "2.0.0",
            "targets": ["denoiser/2.0.0/model.onnx", "denoiser/2.0.0/probe.npz"],
        }
    },
}


class Server:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.revoked = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/v1/enroll":
            body = json.loads(request.content)
            if body["enrollment_token"] != "good":
                return httpx.Response(401, json={"detail": "bad token"})
            return httpx.Response(
                201, json={"device_id": "dev-1", "credential": "c", "poll_interval_s": 30}
            )
        if self.revoked or request.headers.get("authorization") != "Bearer c":
            return httpx.Response(401, json={"detail": "unknown credential"})
        if path == "/api/v1/devices/dev-1/desired-state":
            if request.headers.get("if-none-match") == '"7"':
                return httpx.Response(304)
            return httpx.Response(200, json=DESIRED, headers={"etag": '"7"'})
        if path == "/api/v1/devices/dev-1/inventory":
            return httpx.Response(204)
        if path == "/api/v1/devices/dev-1/events":
            events = json.loads(request.content)["events"]
            return httpx.Response(200, json={"accepted_through": events[-1]["seq"]})
        return httpx.Response(404)


def client(server: Any) -> ApiClient:
    return ApiClient("https://ota.test/", httpx.Client(transport=httpx.MockTransport(server)))


def test_enroll_then_check_in_with_etag() -> None:
    server = Server()
    api = client(server)
    assert api.enroll("good", "cam-7", "x86-64-cpu") == ("dev-1", "c")
    state = api.desired_state(None)
    assert state is not None and state.etag == '"7"' and state.revision == 7
    assert state.components["denoiser"].targets[1] == "denoiser/2.0.0/probe.npz"
    assert api.desired_state('"7"') is None
    assert server.requests[-1].headers["if-none-match"] == '"7"'
    api.put_inventory({"hardware_class": "x"})
    assert api.post_events([{"seq": 3}, {"seq": 4}]) == 4


def test_refused_token_and_revoked_credential_say_what_to_do() -> None:
    server = Server()
    api = client(server)
    with pytest.raises(CredentialError, match="already used"):
        api.enroll("used", "cam-7", "x86-64-cpu")
    api.set_identity("dev-1", "c")
    server.revoked = True
    with pytest.raises(CredentialError, match="revoked") as info:
        api.desired_state(None)
    assert info.value.status_code == 401
    assert isinstance(info.value, TransportError)


def test_network_errors_become_transport_errors() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = client(down)
    api.set_identity("dev-1", "c")
    with pytest.raises(TransportError, match="connection refused"):
        api.desired_state(None)


def test_unexpected_status_and_bad_bodies() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("events"):
            return httpx.Response(200, json={"accepted": 1})
        if request.url.path.endswith("desired-state"):
            return httpx.Response(200, content=b"<html>")
        return httpx.Response(500, text="boom")

    api = client(broken)
    api.set_identity("dev-1", "c")
    with pytest.raises(HTTPStatusError) as info:
        api.put_inventory({})
    assert info.value.status_code == 500
    with pytest.raises(FormatError):
        api.desired_state(None)
    with pytest.raises(FormatError, match="accepted_through"):
        api.post_events([{"seq": 1}])


@pytest.mark.parametrize(
    "body",
    [
        {"components": []},
        {"components": {"a": {"release_id": "r", "version": "1.0.0", "targets": "x"}}},
        {"components": {"a": {"release_id": 3, "version": "1.0.0", "targets": []}}},
        {"revision": "7", "components": {}},
        {"components": {"a": {"release_id": "r", "version": "1", "targets": [], "status": 1}}},
    ],
)
def test_malformed_desired_state_is_a_format_error(body: dict[str, Any]) -> None:
    api = client(lambda r: httpx.Response(200, json=body))
    api.set_identity("dev-1", "c")
    with pytest.raises(FormatError):
        api.desired_state(None)


def test_calls_before_enrollment_are_caller_bugs() -> None:
    with pytest.raises(RuntimeError, match="not enrolled"):
        client(Server()).desired_state(None)


def test_inventory_document_and_digest() -> None:
    rec = ComponentRecord(committed_slot="b", committed=ReleaseRef("2.0.0", "rel-2"))
    inv = build_inventory(
        hardware_class="x86-64-cpu",
        model_ram_budget_mb=512,
        agent_version="0.1.0",
        disk_free_bytes=5 << 30,
        components={"denoiser": rec},
    )
    assert inv["components"] == {
        "denoiser": {"version": "2.0.0", "release_id": "rel-2", "state": "idle", "slot": "b"}
    }
    assert inv["disk_free_mb"] == 5120 and inv["ram_total_mb"] > 0
    assert inventory_digest(inv) == inventory_digest(dict(inv, disk_free_mb=5121))
    assert inventory_digest(inv) != inventory_digest(dict(inv, disk_free_mb=4000))


def test_http_client_verifies_the_server_against_the_given_ca(tmp_path: Path) -> None:
    from edgeota.server.devcerts import make_dev_certificates

    certs = make_dev_certificates(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"revision": 1, "components": {}}')

        def log_message(self, *args: Any) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{httpd.server_address[1]}"
    try:
        with make_http_client(url, certs.ca_cert) as http:
            api = ApiClient(url, http, device_id="dev-1", credential="c")
            state = api.desired_state(None)
            assert state is not None and state.revision == 1
        with make_http_client(url, None) as http:  # system CAs do not know the dev CA
            api = ApiClient(url, http, device_id="dev-1", credential="c")
            with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
                api.desired_state(None)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_variant_choice_is_parsed_and_accelerators_are_inventoried() -> None:
    from edgeota.agent.api_client import parse_desired_state

    entry = {"release_id": "r", "version": "1.0.0", "targets": []}
    state = parse_desired_state(
        {"components": {"a": {**entry, "status": "no_variant_fits", "reason": "too big"}}}, None
    )
    assert (state.components["a"].status, state.components["a"].reason) == (
        "no_variant_fits",
        "too big",
    )
    assert parse_desired_state({"components": {"a": entry}}, None).components["a"].status is None
    common: dict[str, Any] = {
        "hardware_class": "x",
        "model_ram_budget_mb": 1,
        "agent_version": "",
        "disk_free_bytes": 0,
        "components": {},
    }
    # Only sent when there are any: an older server refuses unknown inventory keys.
    assert "accelerators" not in build_inventory(**common)
    assert build_inventory(**common, accelerators=["npu", "cuda"])["accelerators"] == [
        "cuda",
        "npu",
    ]
