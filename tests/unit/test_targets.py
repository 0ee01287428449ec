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
