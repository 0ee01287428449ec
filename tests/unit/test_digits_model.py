"""The example denoiser: trains, exports to ONNX with the right shapes, and its probes work."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeota.modelops.digits import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExampleRelease,
    ExampleReleases,
    build_example_releases,
    run_onnx,
)
from edgeota.modelops.onnx_edit import poison_output_with_nan, reshape_output
from edgeota.runtime.probe import NON_FINITE_REASON, compare_outputs, load_probe


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> ExampleReleases:
    # One folder for the whole session: other test modules reuse the same build.
    return build_example_releases(tmp_path_factory.getbasetemp() / "digits-releases", seed=0)


def model_bytes(release: ExampleRelease) -> bytes:
    return (release.path / "model.onnx").read_bytes()


def probe_outputs(release: ExampleRelease) -> dict[str, np.ndarray]:
    probe = load_probe(release.path / "probe.npz")
    return {OUTPUT_NAME: run_onnx(model_bytes(release), probe.inputs[INPUT_NAME])}


def test_retrained_model_reconstructs_better(built: ExampleReleases) -> None:
    assert built.v1.psnr_db > built.noisy_psnr_db + 2.0
    assert built.v2.psnr_db > built.v1.psnr_db + 0.5
    assert np.isnan(built.v3_broken.psnr_db)


def test_release_folders_follow_the_documented_format(built: ExampleReleases) -> None:
    for release in built.releases:
        manifest = json.loads((release.path / "release.json").read_text())
        assert manifest["schema"] == 1
        assert manifest["hardware"] == ["*"]
        assert manifest["files"] == [
            {"path": "model.onnx", "role": "model", "variant": "fp32"},
            {"path": "probe.npz", "role": "probe", "tolerance": release.tolerance},
        ]
        assert release.model_bytes == (release.path / "model.onnx").stat().st_size
    assert built.v3_broken.tolerance == built.v2.tolerance


@pytest.mark.parametrize("batch", [1, 5])
def test_exported_models_map_a_batch_of_images_to_images(
    built: ExampleReleases, batch: int
) -> None:
    noisy = np.random.default_rng(0).random((batch, 64)).astype(np.float32)
    for release in (built.v1, built.v2):
        model = onnx.load_from_string(model_bytes(release))
        dims = [d.dim_value or None for d in model.graph.output[0].type.tensor_type.shape.dim]
        assert (model.graph.output[0].name, dims) == (OUTPUT_NAME, [None, 64])
        out = run_onnx(model_bytes(release), noisy)
        assert out.shape == (batch, 64)
        assert out.dtype == np.float32
        assert np.isfinite(out).all()


def test_broken_model_loads_but_outputs_nan(built: ExampleReleases) -> None:
    noisy = np.random.default_rng(0).random((3, 64)).astype(np.float32)
    out = run_onnx(model_bytes(built.v3_broken), noisy)
    assert out.shape == (3, 64)
    assert np.isnan(out).all()


def test_probe_sets_pass_for_good_models_and_fail_for_the_broken_one(
    built: ExampleReleases,
) -> None:
    for release in (built.v1, built.v2):
        probe = load_probe(release.path / "probe.npz")
        assert probe.inputs[INPUT_NAME].shape == (16, 64)
        assert probe.inputs[INPUT_NAME].dtype == np.float32
        result = compare_outputs(probe_outputs(release), probe.references, release.tolerance)
        assert result.ok, result.reason
    broken = built.v3_broken
    probe = load_probe(broken.path / "probe.npz")
    result = compare_outputs(probe_outputs(broken), probe.references, broken.tolerance)
    assert not result.ok
    assert result.reason == NON_FINITE_REASON


def test_v1_probe_fails_against_v2_model(built: ExampleReleases) -> None:
    """The probe tolerance is tight enough to tell two versions apart."""
    probe = load_probe(built.v1.path / "probe.npz")
    outputs = {OUTPUT_NAME: run_onnx(model_bytes(built.v2), probe.inputs[INPUT_NAME])}
    assert not compare_outputs(outputs, probe.references, built.v1.tolerance).ok


def test_second_build_reuses_the_first_and_a_damaged_one_is_rebuilt(
    built: ExampleReleases,
) -> None:
    again = build_example_releases(built.out_dir, seed=0)
    assert again.cached
    assert again.v2.psnr_db == built.v2.psnr_db
    original = model_bytes(built.v1)

    (built.v1.path / "model.onnx").write_bytes(b"damaged")
    rebuilt = build_example_releases(built.out_dir, seed=0)
    assert not rebuilt.cached
    # Seeded training gives the same bytes again.
    assert model_bytes(rebuilt.v1) == original


def test_reshape_output_fixes_a_flattened_regressor_output() -> None:
    flat = helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["variable"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [flat],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    fixed = reshape_output(model, 4, "y", graph_name="fixed")
    assert fixed.graph.name == "fixed"
    assert model.graph.output[0].name == "variable"  # the input model is untouched
    poisoned = poison_output_with_nan(fixed)
    assert [o.name for o in poisoned.graph.output] == ["y"]
    assert [n.op_type for n in poisoned.graph.node] == ["Identity", "Reshape", "Mul"]
