"""The signed custom schema: round trip through canonical JSON, and refusal of bad input."""

from __future__ import annotations

import pytest
from securesystemslib.formats import encode_canonical

from edgeota.errors import FormatError, PolicyError
from edgeota.targets import TargetCustom, target_path


def _custom(**overrides: object) -> TargetCustom:
    fields: dict[str, object] = {
        "component": "denoiser",
        "version": "2.0.0",
        "release_id": "rel-abc",
        "role": "probe",
        "file": "probe.npz",
        "tolerance": {"max_abs_error": 0.001, "min_psnr_db": 30.5},
    }
    fields.update(overrides)
    return TargetCustom(**fields)  # type: ignore[arg-type]


def test_custom_survives_canonical_json_used_for_signing() -> None:
    custom = _custom()
    encoded = encode_canonical(custom.to_custom())
    assert isinstance(encoded, str)
    assert TargetCustom.from_custom(custom.to_custom()) == custom


def test_tolerance_must_be_numeric() -> None:
    raw = _custom().to_custom()
    raw["edgeota"]["tolerance"] = {"max_abs_error": "lots"}
    with pytest.raises(FormatError, match="invalid"):
        TargetCustom.from_custom(raw)


def test_missing_key_is_a_format_error() -> None:
    raw = _custom().to_custom()
    del raw["edgeota"]["release_id"]
    with pytest.raises(FormatError, match="release_id"):
        TargetCustom.from_custom(raw)


@pytest.mark.parametrize("file", ["../x", "/etc/passwd", "a/../../b", "a\\b", ""])
def test_traversal_in_file_is_refused(file: str) -> None:
    with pytest.raises(PolicyError):
        _custom(file=file)
    raw = _custom().to_custom()
    raw["edgeota"]["file"] = file
    with pytest.raises(FormatError):
        TargetCustom.from_custom(raw)


@pytest.mark.parametrize("component", ["..", "../x", "Denoiser", "a/b", ""])
def test_bad_component_names_are_refused(component: str) -> None:
    with pytest.raises(PolicyError):
        target_path(component, "1.0.0", "m.onnx")


def test_hardware_match() -> None:
    assert _custom().fits_hardware("anything")
    only = _custom(hardware=("jetson-orin",))
    assert only.fits_hardware("jetson-orin")
    assert not only.fits_hardware("rpi5")


# --- optional variant keys ------------------------------------------------------------------


def test_variant_keys_survive_canonical_json_as_integers_and_decimal_strings() -> None:
    custom = _custom(
        role="model",
        file="model-int8.onnx",
        variant="int8",
        tolerance=None,
        memory_mb=81,
        quality=39.359,
        arch=("x86_64", "aarch64"),
        accelerator="npu",
    )
    raw = custom.to_custom()
    encode_canonical(raw)  # raises on floats: canonical JSON has none
    body = raw["edgeota"]
    assert body["memory_mb"] == 81 and body["quality"] == "39.359"
    assert body["arch"] == ["x86_64", "aarch64"] and body["accelerator"] == "npu"
    assert TargetCustom.from_custom(raw) == custom


def test_targets_without_variant_keys_sign_exactly_as_before() -> None:
    body = _custom().to_custom()["edgeota"]
    assert not {"memory_mb", "quality", "arch", "accelerator"} & set(body)
    parsed = TargetCustom.from_custom(_custom().to_custom())
    assert (parsed.memory_mb, parsed.quality, parsed.arch, parsed.accelerator) == (
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("memory_mb", "81"),
        ("memory_mb", True),
        ("memory_mb", -1),
        ("quality", 39.5),
        ("quality", "nan"),
        ("quality", "good"),
        ("arch", "x86_64"),
        ("accelerator", ["npu"]),
    ],
)
def test_bad_variant_keys_are_format_errors(key: str, value: object) -> None:
    raw = _custom(role="model", file="m.onnx", tolerance=None).to_custom()
    raw["edgeota"][key] = value
    with pytest.raises(FormatError):
        TargetCustom.from_custom(raw)
