"""Probe sets: loading, saving, and the pure output comparison behind the device health check."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeota.errors import FormatError
from edgeota.runtime.probe import (
    NON_FINITE_REASON,
    PSNR_CAP_DB,
    ProbeSet,
    compare_outputs,
    load_probe,
    psnr_db,
    save_probe,
)

RNG = np.random.default_rng(7)
REFERENCE = RNG.random((4, 64)).astype(np.float32)


def probe_set() -> ProbeSet:
    return ProbeSet(
        inputs={"noisy": RNG.random((4, 64)).astype(np.float32)},
        references={"denoised": REFERENCE.copy()},
    )


# --- compare_outputs -------------------------------------------------------------------------


def test_identical_outputs_pass_with_zero_error_and_capped_psnr() -> None:
    result = compare_outputs(
        {"denoised": REFERENCE.copy()}, {"denoised": REFERENCE}, {"max_abs_error": 0.0}
    )
    assert result.ok
    assert result.reason is None
    assert result.figures == {"max_abs_error": 0.0, "mean_abs_error": 0.0, "psnr_db": PSNR_CAP_DB}


def test_small_error_within_tolerance_passes_and_is_measured() -> None:
    output = REFERENCE + 0.01
    result = compare_outputs({"denoised": output}, {"denoised": REFERENCE}, {"max_abs_error": 0.02})
    assert result.ok
    assert result.figures["max_abs_error"] == pytest.approx(0.01, rel=1e-3)
    assert result.figures["mean_abs_error"] == pytest.approx(0.01, rel=1e-3)
    assert result.figures["psnr_db"] == pytest.approx(40.0, abs=0.01)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_fail_whatever_the_tolerance(bad: float) -> None:
    output = REFERENCE.copy()
    output[1, 3] = bad
    result = compare_outputs({"denoised": output}, {"denoised": REFERENCE}, {})
    assert not result.ok
    assert result.reason == NON_FINITE_REASON
    assert result.figures == {"non_finite_values": 1.0}


def test_shape_mismatch_fails() -> None:
    result = compare_outputs(
        {"denoised": REFERENCE.reshape(-1, 1)}, {"denoised": REFERENCE}, {"max_abs_error": 1.0}
    )
    assert not result.ok
    assert result.reason is not None
    assert "shape [256, 1]" in result.reason
    assert "[4, 64]" in result.reason


def test_error_over_tolerance_fails_with_the_figures() -> None:
    output = REFERENCE.copy()
    output[0, 0] += 0.3
    result = compare_outputs({"denoised": output}, {"denoised": REFERENCE}, {"max_abs_error": 0.25})
    assert not result.ok
    assert result.reason is not None
    assert "exceeds the tolerance 0.25" in result.reason
    assert result.figures["max_abs_error"] == pytest.approx(0.3, rel=1e-5)


def test_min_psnr_bound() -> None:
    output = REFERENCE + 0.1  # PSNR 20 dB
    assert compare_outputs({"denoised": output}, {"denoised": REFERENCE}, {"min_psnr_db": 19.0}).ok
    result = compare_outputs({"denoised": output}, {"denoised": REFERENCE}, {"min_psnr_db": 21.0})
    assert not result.ok
    assert result.reason is not None
    assert "below the tolerance 21.00 dB" in result.reason


def test_missing_output_fails_and_extra_outputs_are_ignored() -> None:
    missing = compare_outputs({"other": REFERENCE}, {"denoised": REFERENCE}, {})
    assert not missing.ok
    assert missing.reason is not None
    assert "denoised" in missing.reason
    extra = compare_outputs(
        {"denoised": REFERENCE, "other": np.full(3, np.nan)}, {"denoised": REFERENCE}, {}
    )
    assert extra.ok


def test_unknown_tolerance_key_is_a_caller_error_listing_known_keys() -> None:
    with pytest.raises(
        ValueError,
        match=r"max_abs_err.*known keys are \['max_abs_error', 'min_psnr_db', 'min_agreement', "
        r"'max_latency_ms', 'max_peak_rss_mb'\]",
    ):
        compare_outputs({"denoised": REFERENCE}, {"denoised": REFERENCE}, {"max_abs_err": 0.1})


def test_psnr_of_nan_is_nan() -> None:
    assert np.isnan(psnr_db(np.full(4, np.nan), np.zeros(4)))


@given(
    reference=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=8),
        elements=st.floats(0.0, 1.0, width=32),
    ),
    data=st.data(),
)
def test_any_finite_output_passes_against_itself_and_fails_once_poisoned(
    reference: np.ndarray, data: st.DataObject
) -> None:
    assert compare_outputs({"y": reference}, {"y": reference}, {"max_abs_error": 0.0}).ok
    poisoned = reference.copy()
    index = data.draw(st.integers(0, poisoned.size - 1))
    poisoned.flat[index] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    result = compare_outputs({"y": poisoned}, {"y": reference}, {"max_abs_error": 1e9})
    assert not result.ok
    assert result.reason == NON_FINITE_REASON


@given(delta=st.floats(1e-4, 1.0), bound=st.floats(0.0, 1.0))
def test_max_abs_error_bound_decides_exactly(delta: float, bound: float) -> None:
    reference = np.zeros((2, 3))
    output = reference.copy()
    output[1, 2] = delta
    result = compare_outputs({"y": output}, {"y": reference}, {"max_abs_error": bound})
    assert result.figures["max_abs_error"] == delta
    assert result.ok == (delta <= bound)


# --- load_probe / save_probe -----------------------------------------------------------------


def test_save_then_load_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    probe = probe_set()
    path = tmp_path / "probe.npz"
    save_probe(path, probe)
    loaded = load_probe(path)
    assert loaded.batch_size == 4
    np.testing.assert_array_equal(loaded.inputs["noisy"], probe.inputs["noisy"])
    np.testing.assert_array_equal(loaded.references["denoised"], probe.references["denoised"])
    assert [p.name for p in tmp_path.iterdir()] == ["probe.npz"]


def _write_npz(path: Path, **arrays: np.ndarray) -> Path:
    with path.open("wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"input:x": np.zeros((2, 3))}, "no 'reference:<name>' arrays"),
        ({"reference:y": np.zeros((2, 3))}, "no 'input:<name>' arrays"),
        ({"input:x": np.zeros((2, 3)), "reference:y": np.zeros((3, 3))}, "batch size"),
        (
            {"input:x": np.zeros((2, 3)), "reference:y": np.zeros((2,)), "extra": np.zeros(2)},
            "unexpected array 'extra'",
        ),
        ({"input:x": np.zeros((0, 3)), "reference:y": np.zeros((0, 3))}, "no examples"),
        ({"input:x": np.array(1.0), "reference:y": np.zeros(1)}, "scalar"),
        ({"input:x": np.array(["a", "b"]), "reference:y": np.zeros(2)}, "numeric"),
    ],
)
def test_malformed_probe_archives_are_format_errors(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = _write_npz(tmp_path / "probe.npz", **arrays)
    with pytest.raises(FormatError, match=message):
        load_probe(path)


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    objects = np.array([{"x": 1}, None], dtype=object)
    path = _write_npz(tmp_path / "probe.npz", **{"input:x": objects, "reference:y": np.zeros(2)})
    with pytest.raises(FormatError, match=r"not a readable \.npz"):
        load_probe(path)


def test_garbage_and_truncated_files_are_format_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00not a probe archive" * 10)
    with pytest.raises(FormatError):
        load_probe(garbage)

    good = tmp_path / "good.npz"
    save_probe(good, probe_set())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FormatError):
        load_probe(truncated)


def test_a_single_npy_array_is_not_a_probe_archive(tmp_path: Path) -> None:
    path = tmp_path / "probe.npy"
    np.save(path, np.zeros((2, 3)))
    with pytest.raises(FormatError, match="single array"):
        load_probe(path)


def test_corrupt_member_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "probe.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("input:x.npy", b"\x93NUMPY broken header")
        archive.writestr("reference:y.npy", b"")
    with pytest.raises(FormatError):
        load_probe(path)


def test_missing_file_is_not_hidden(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_probe(tmp_path / "absent.npz")
