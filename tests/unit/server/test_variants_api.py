"""Variant choice at check-in: each device gets the best-quality model variant it can run.

A heterogeneous fleet (budgets, an accelerator, an architecture, one that fits nothing, one
that has not reported yet) checks in against one release with several variants.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgeota.server.app import create_app
from edgeota.server.bootstrap import prepare
from edgeota.server.settings import ServerSettings
from edgeota.targets import TargetCustom
from support import RecordingSigner


@pytest.fixture
def signer() -> RecordingSigner:
    return RecordingSigner()


@pytest.fixture
def client(tmp_path: Path, database_url: str, signer: RecordingSigner) -> Iterator[TestClient]:
    settings = ServerSettings(
        data_dir=tmp_path / "server", database_url=database_url, poll_interval_s=5
    )
    token = prepare(settings).first_admin_token
    with TestClient(create_app(settings, signer=signer)) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c


def upload(client: TestClient, data: bytes) -> dict[str, Any]:
    sha = hashlib.sha256(data).hexdigest()
    assert client.put(f"/api/v1/artifacts/{sha}", content=data).status_code == 200
    return {"sha256": sha, "length": len(data)}


VARIANTS = {
    # file: (variant, needs)
    "model-fp32.onnx": ("fp32", {"memory_mb": 400, "quality": 200.0}),
    "model-fp16-gpu.onnx": ("fp16-gpu", {"memory_mb": 200, "quality": 80.0, "accelerator": "cuda"}),
    "model-int8.onnx": ("int8", {"memory_mb": 150, "quality": 40.0}),
    "model-int4-arm.onnx": ("int4-arm", {"memory_mb": 90, "quality": 30.0, "arch": ["aarch64"]}),
    "model-int4.onnx": ("int4", {"memory_mb": 100, "quality": 28.0}),
}


def publish_variants(client: TestClient, version: str = "1.0.0") -> dict[str, Any]:
    files = []
    for name, (variant, needs) in VARIANTS.items():
        art = upload(client, f"{name} {version}".encode())
        files.append({"file": name, "role": "model", "variant": variant, **art, **needs})
        probe = upload(client, f"probe for {variant} {version}".encode())
        files.append(
            {
                "file": f"probe-{variant}.npz",
                "role": "probe",
                "variant": variant,
                "tolerance": {"max_abs_error": 0.1},
                **probe,
            }
        )
    files.append({"file": "labels.txt", "role": "file", **upload(client, b"0 1 2 3")})
    r = client.post(
        "/api/v1/releases", json={"component": "denoiser", "version": version, "files": files}
    )
    assert r.status_code in (200, 201), r.text
    release: dict[str, Any] = r.json()
    assert client.post(
        "/api/v1/deployments", json={"release": release["id"], "group": "lab"}
    ).status_code in (200, 201)
    return release


class Device:
    def __init__(self, client: TestClient, name: str) -> None:
        self.client = client
        token = client.post("/api/v1/enrollment-tokens", json={"groups": ["lab"]}).json()
        r = client.post(
            "/api/v1/enroll",
            json={"enrollment_token": token["token"], "name": name, "hardware_class": "x86-64"},
            headers={"Authorization": ""},
        )
        assert r.status_code == 201, r.text
        self.id = r.json()["device_id"]
        self.headers = {"Authorization": f"Bearer {r.json()['credential']}"}

    def inventory(
        self, budget: int, arch: str = "x86_64", accelerators: list[str] | None = None
    ) -> None:
        body = {
            "hardware_class": "x86-64",
            "arch": arch,
            "ram_total_mb": 16384,
            "model_ram_budget_mb": budget,
            "disk_free_mb": 9000,
            "accelerators": accelerators or [],
        }
        r = self.client.put(f"/api/v1/devices/{self.id}/inventory", json=body, headers=self.headers)
        assert r.status_code == 204, r.text

    def checkin(self, etag: str | None = None) -> tuple[int, dict[str, Any], str]:
        headers = dict(self.headers)
        if etag:
            headers["If-None-Match"] = etag
        r = self.client.get(f"/api/v1/devices/{self.id}/desired-state", headers=headers)
        body = r.json() if r.status_code == 200 else {}
        return r.status_code, body, r.headers.get("etag", "")

    def component(self) -> dict[str, Any]:
        status, body, _ = self.checkin()
        assert status == 200
        entry: dict[str, Any] = body["components"]["denoiser"]
        return entry

    def view(self) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/api/v1/devices/{self.id}").json()
        return body

    def events(self, name: str) -> list[dict[str, Any]]:
        events = self.client.get(f"/api/v1/devices/{self.id}/events").json()
        return [e for e in events if e["event"] == name]


def files_of(entry: dict[str, Any]) -> set[str]:
    return {t.rsplit("/", 1)[1] for t in entry["targets"]}


def test_each_device_gets_the_best_variant_it_can_run(client: TestClient) -> None:
    big, gpu, arm, small, tiny = (Device(client, n) for n in ("big", "gpu", "arm", "small", "tiny"))
    big.inventory(1024)
    gpu.inventory(256, accelerators=["cuda"])
    arm.inventory(120, arch="aarch64")
    small.inventory(120)
    tiny.inventory(64)
    release = publish_variants(client)

    expected = {
        big: "fp32",
        gpu: "fp16-gpu",
        arm: "int4-arm",  # aarch64 only, and the better of the two that fit 120 MB
        small: "int4",
    }
    for device, variant in expected.items():
        entry = device.component()
        assert entry["variant"] == variant and entry["status"] is None
        assert files_of(entry) == {f"model-{variant}.onnx", f"probe-{variant}.npz", "labels.txt"}
        choice = device.view()["variant_choice"]["denoiser"]
        assert choice == {"variant": variant, "status": "chosen", "reason": entry["reason"]}
        assert choice["reason"].startswith(f"{variant}: the best quality")

    reason = small.component()["reason"]
    assert reason == (
        "int4: the best quality (28) of the variants that fit, needs 100 MB of 120 MB, "
        "passed over: fp32 (needs 400 MB); fp16-gpu (needs 200 MB, needs accelerator 'cuda'); "
        "int8 (needs 150 MB); int4-arm (runs only on aarch64, not x86_64)"
    )

    none = tiny.component()
    assert none["status"] == "no_variant_fits" and none["targets"] == []
    assert none["variant"] is None
    assert "no variant fits" in none["reason"] and "64 MB model RAM budget" in none["reason"]
    assert none["release_id"] == release["id"]  # the release is still what the server wants
    assert tiny.view()["variant_choice"]["denoiser"]["status"] == "no_variant_fits"


def test_the_choice_is_an_event_once_and_again_when_the_budget_changes(
    client: TestClient,
) -> None:
    device = Device(client, "cam")
    device.inventory(1024)
    publish_variants(client)
    status, body, etag = device.checkin()
    assert status == 200 and body["components"]["denoiser"]["variant"] == "fp32"
    # The hot path is untouched: an unchanged device gets a 304 and no new event.
    assert device.checkin(etag)[0] == 304
    device.checkin()
    chosen = device.events("variant_chosen")
    assert len(chosen) == 1
    assert chosen[0]["detail"]["variant"] == "fp32" and chosen[0]["seq"] < 0

    device.inventory(160)  # the operator lowered the device's model RAM budget
    status, body, new_etag = device.checkin(etag)
    assert status == 200 and new_etag != etag
    assert body["components"]["denoiser"]["variant"] == "int8"
    chosen = device.events("variant_chosen")
    assert [e["detail"]["variant"] for e in chosen] == ["int8", "fp32"]  # newest first
    assert "needs 150 MB of 160 MB" in chosen[0]["reason"]

    device.inventory(160)  # the same inventory again: no new desired state
    assert device.checkin(new_etag)[0] == 304


def test_a_device_without_inventory_waits_for_it(client: TestClient) -> None:
    device = Device(client, "new")
    publish_variants(client)
    entry = device.component()
    assert entry["status"] == "awaiting_inventory" and entry["targets"] == []
    device.inventory(500)
    assert device.component()["variant"] == "fp32"


def test_signed_targets_carry_the_variant_keys(client: TestClient, signer: RecordingSigner) -> None:
    publish_variants(client)
    customs = {path: TargetCustom.from_custom(custom) for path, _, _, custom in signer.signed}
    gpu = customs["denoiser/1.0.0/model-fp16-gpu.onnx"]
    assert (gpu.variant, gpu.memory_mb, gpu.quality, gpu.accelerator) == (
        "fp16-gpu",
        200,
        80.0,
        "cuda",
    )
    assert customs["denoiser/1.0.0/model-int4-arm.onnx"].arch == ("aarch64",)
    raw = next(c for p, _, _, c in signer.signed if p.endswith("model-int8.onnx"))
    assert raw["edgeota"]["quality"] == "40.0"  # a decimal string: canonical JSON has no floats
    probe = customs["denoiser/1.0.0/probe-int8.npz"]
    assert probe.variant == "int8" and probe.memory_mb is None
    release = client.get("/api/v1/releases").json()[0]
    listed = {f["file"]: f for f in release["files"]}
    assert listed["model-int8.onnx"]["memory_mb"] == 150
    assert listed["model-int8.onnx"]["quality"] == 40.0


def test_single_model_release_is_listed_whole_as_before(client: TestClient) -> None:
    device = Device(client, "cam")
    device.inventory(10)
    art = upload(client, b"model")
    files = [{"file": "model.onnx", "role": "model", "variant": "fp32", **art}]
    r = client.post(
        "/api/v1/releases", json={"component": "denoiser", "version": "1.0.0", "files": files}
    )
    assert r.status_code in (200, 201), r.text
    client.post("/api/v1/deployments", json={"release": r.json()["id"], "group": "lab"})
    entry = device.component()
    assert entry["targets"] == ["denoiser/1.0.0/model.onnx"]
    assert entry["variant"] is None and entry["status"] is None
    assert device.view()["variant_choice"] == {}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            [
                ("m1.onnx", "model", "a", {}),
                ("p1.npz", "probe", "a", {}),
                ("p2.npz", "probe", "a", {}),
            ],
            "at most one probe set",
        ),
        (
            [
                ("m1.onnx", "model", "a", {}),
                ("p.npz", "probe", None, {}),
                ("p1.npz", "probe", "a", {}),
            ],
            "not both",
        ),
        ([("m1.onnx", "model", "a", {}), ("p.npz", "probe", "b", {})], "no model file has"),
        ([("m1.onnx", "model", "a", {}), ("m2.onnx", "model", None, {})], "name the variant"),
        ([("m1.onnx", "model", "a", {}), ("m2.onnx", "model", "a", {})], "more than one model"),
        ([("m1.onnx", "model", "a", {}), ("p.npz", "probe", "a", {"memory_mb": 5})], "only model"),
    ],
)
def test_inconsistent_variant_files_are_refused(
    client: TestClient, files: list[tuple[str, str, str | None, dict[str, Any]]], message: str
) -> None:
    body = [
        {"file": name, "role": role, "variant": variant, **upload(client, name.encode()), **extra}
        for name, role, variant, extra in files
    ]
    r = client.post(
        "/api/v1/releases", json={"component": "denoiser", "version": "1.0.0", "files": body}
    )
    assert r.status_code == 422, r.text
    assert message in r.text


def test_a_built_bundle_publishes_with_its_variants(client: TestClient, tmp_path: Path) -> None:
    from edgeota.modelops.bundle import BuildOptions, build_bundle
    from edgeota.releasefolder import load_release
    from modelfiles import image_mlp_onnx

    bundle = tmp_path / "bundle"
    build_bundle(
        image_mlp_onnx(tmp_path / "m.onnx"),
        bundle,
        BuildOptions(variants=["fp32", "int8"], repeat=1),
    )
    local = load_release(bundle)
    for f in local.files:
        upload(client, f.source.read_bytes())
    r = client.post(
        "/api/v1/releases",
        json={
            "component": "denoiser",
            "version": "1.0.0",
            "files": [f.to_api() for f in local.files],
        },
    )
    assert r.status_code in (200, 201), r.text
    files = {f["file"]: f for f in r.json()["files"]}
    assert files["model-int8.onnx"]["memory_mb"] > 0
    assert files["model-fp32.onnx"]["quality"] > files["model-int8.onnx"]["quality"]
    assert files["probe-int8.npz"]["tolerance"]["max_abs_error"] > 0
