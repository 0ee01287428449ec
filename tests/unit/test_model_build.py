"""``edgeota model build``: variants of ONNX, GGUF and safetensors models, measured and
described in a bundle that ``edgeota release publish`` takes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgeota.modelops.bundle import BuildOptions, build_bundle
from edgeota.modelops.catalog import BuildError
from edgeota.modelops.manifest import MANIFEST_VERSION, Manifest, load_manifest
from edgeota.modelops.memory import EstimateConfig, estimate_gguf, llm_shape
from edgeota.modelops.onnx_variants import OnnxBuildOptions
from edgeota.releasefolder import load_release
from edgeota.runtime.probe import load_probe
from modelfiles import (
    LLM,
    checkpoint_safetensors,
    embedding_onnx,
    image_mlp_onnx,
    no_matmul_onnx,
    tiny_llm_gguf,
)
from support import skip_or_fail

FAST = 2  # probe runs per variant: enough for a latency figure, quick on a shared machine


def build(model: Path, out: Path, **kwargs: object) -> Manifest:
    return build_bundle(model, out, BuildOptions(repeat=FAST, **kwargs))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Manifest]:
    work = tmp_path_factory.mktemp("onnx")
    model = image_mlp_onnx(work / "mlp.onnx")
    bundle = work / "bundle"
    return model, bundle, build(model, bundle)


def test_onnx_bundle_holds_every_variant_with_its_own_probe(
    onnx_bundle: tuple[Path, Path, Manifest],
) -> None:
    model, bundle, manifest = onnx_bundle
    assert [v.name for v in manifest.variants] == ["fp32", "fp16", "int8", "int4"]
    assert load_manifest(bundle) == manifest
    assert (
        json.loads((bundle / "manifest.json").read_text())["manifest_version"] == MANIFEST_VERSION
    )
    release = load_release(bundle)
    models = {f.variant: f for f in release.files if f.role == "model"}
    probes = {f.variant: f for f in release.files if f.role == "probe"}
    assert set(models) == set(probes) == {"fp32", "fp16", "int8", "int4"}
    for v in manifest.variants:
        assert models[v.name].file == v.file and models[v.name].sha256 == v.sha256
        assert probes[v.name].tolerance == v.tolerance
    # fp32 is the original, byte for byte; the others are smaller on disk.
    assert (bundle / "model-fp32.onnx").read_bytes() == model.read_bytes()
    size = {v.name: v.bytes for v in manifest.variants}
    assert size["int4"] < size["int8"] < size["fp16"] < size["fp32"]


def test_reference_outputs_are_the_originals_and_the_probe_is_marked_generated(
    onnx_bundle: tuple[Path, Path, Manifest],
) -> None:
    model, bundle, manifest = onnx_bundle
    probe = load_probe(bundle / "probe-int4.npz")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    expected = session.run(["y"], {"x": probe.inputs["x"]})[0]
    np.testing.assert_allclose(probe.references["y"], expected, rtol=1e-6, atol=1e-6)
    assert manifest.probe is not None and manifest.probe["generated"] is True
    assert any("no probe set was given" in note for note in manifest.notes)
    assert manifest.metric["name"] == "psnr_db"  # sigmoid outputs: image-like


def test_quality_falls_with_precision_and_tolerance_covers_the_build_error(
    onnx_bundle: tuple[Path, Path, Manifest],
) -> None:
    _, _, manifest = onnx_bundle
    score = {v.name: float(v.quality["score"]) for v in manifest.variants}
    assert score["fp32"] >= score["fp16"] > score["int8"] > score["int4"] > 15.0
    for v in manifest.variants:
        assert v.tolerance is not None
        assert v.tolerance["max_abs_error"] >= v.quality["max_abs_error"]
        assert v.tolerance["max_latency_ms"] > 0 and v.tolerance["max_peak_rss_mb"] > 0


def test_memory_is_estimated_and_measured_in_a_fresh_process(
    onnx_bundle: tuple[Path, Path, Manifest],
) -> None:
    _, _, manifest = onnx_bundle
    for v in manifest.variants:
        assert v.measured is not None and v.measured["what"] == "load+probe"
        peak = v.peak_rss_mb
        assert peak is not None and peak > 20  # a Python process with onnxruntime
        assert 0.5 < v.estimate_mb / peak < 1.5, (v.name, v.estimate_mb, peak)
        assert v.measured["median_ms"] is not None
    fp16 = manifest.variant("fp16")
    assert any("fp32 copy" in note for note in fp16.memory["notes"])


def test_user_probe_is_used_and_static_int8_is_calibrated_on_it(tmp_path: Path) -> None:
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    probe = tmp_path / "probe.npz"
    inputs = np.random.default_rng(5).random((6, 64)).astype(np.float32)
    np.savez(probe, x=inputs)
    manifest = build(
        model,
        tmp_path / "b",
        probe=probe,
        variants=["int8"],
        onnx=OnnxBuildOptions(int8_mode="static"),
    )
    assert manifest.probe is not None and manifest.probe["generated"] is False
    assert manifest.probe["examples"] == 6
    assert not manifest.notes
    np.testing.assert_array_equal(load_probe(tmp_path / "b" / "probe-int8.npz").inputs["x"], inputs)
    assert [v.name for v in manifest.variants] == ["int8"]


def test_embedding_model_is_scored_by_cosine_on_tokens_within_its_vocabulary(
    tmp_path: Path,
) -> None:
    model = embedding_onnx(tmp_path / "emb.onnx", vocab=300)
    manifest = build(model, tmp_path / "b", variants=["fp32", "int4"])
    assert manifest.metric["name"] == "cosine"
    tokens = load_probe(tmp_path / "b" / "probe-fp32.npz").inputs["tokens"]
    assert tokens.dtype == np.int64 and tokens.min() >= 0 and tokens.max() < 300
    assert manifest.variant("fp32").quality["score"] == pytest.approx(1.0)
    assert 0.9 < manifest.variant("int4").quality["score"] < 1.0


def test_gguf_variants_are_scored_on_weights_with_a_kv_cache_estimate(tmp_path: Path) -> None:
    model = tiny_llm_gguf(tmp_path / "llm.gguf")
    manifest = build(model, tmp_path / "b")
    assert [v.name for v in manifest.variants] == ["F16", "Q8_0", "Q4_0"]
    assert manifest.metric["name"] == "weight_snr_db"
    snr = {v.name: v.quality["score"] for v in manifest.variants}
    assert snr["F16"] > snr["Q8_0"] > snr["Q4_0"] > 10
    size = {v.name: v.bytes for v in manifest.variants}
    assert size["Q4_0"] < size["Q8_0"] < size["F16"]
    kv_mb = (LLM["layers"] * LLM["context"] * LLM["kv_heads"] * 2 * 16 * 2) / 2**20
    logits_mb = LLM["context"] * LLM["vocab"] * 4 / 2**20  # every position's, as served
    for v in manifest.variants:
        assert v.memory["kv_cache_mb"] == pytest.approx(kv_mb, rel=1e-3)
        assert v.memory["activations_mb"] == pytest.approx(logits_mb, rel=1e-3)
        assert v.measured is not None and v.measured["what"] == "load"
        assert v.probe_file is None and v.tolerance is None
    assert not any(f.role == "probe" for f in load_release(tmp_path / "b").files)
    # A longer configured context grows only the cache.
    import gguf

    reader = gguf.GGUFReader(str(tmp_path / "b" / "model-Q8_0.gguf"))
    metadata = {k: f.contents() for k, f in reader.fields.items()}
    assert metadata["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    assert llm_shape(metadata) is not None
    assert {t.name: t.tensor_type for t in reader.tensors}[
        "blk.0.attn_norm.weight"
    ] == gguf.GGMLQuantizationType.F32


def test_a_large_vocabulary_model_counts_the_logits_the_runtime_keeps() -> None:
    metadata = {
        "general.architecture": "llama",
        "llama.block_count": 32,
        "llama.embedding_length": 4096,
        "llama.attention.head_count": 32,
        "llama.context_length": 4096,
        "llama.vocab_size": 32000,
    }
    estimate = estimate_gguf(3_800 * 2**20, metadata, EstimateConfig())
    assert estimate.activations_mb == pytest.approx(4096 * 32000 * 4 / 2**20)  # 500 MiB
    assert estimate.kv_cache_mb == pytest.approx(2048.0)  # 32 x 4096 x 32 x 256 x 2 B
    shorter = estimate_gguf(3_800 * 2**20, metadata, EstimateConfig(context_length=1024))
    assert shorter.activations_mb == pytest.approx(estimate.activations_mb / 4)
    del metadata["llama.vocab_size"]
    unknown = estimate_gguf(3_800 * 2**20, metadata, EstimateConfig())
    assert unknown.activations_mb == 0.0
    assert any("logits are not counted" in n for n in unknown.notes)


def test_safetensors_variants_keep_integer_tensors(tmp_path: Path) -> None:
    from edgeota.modelops.safetensors_variants import read_checkpoint

    model = checkpoint_safetensors(tmp_path / "ckpt.safetensors")
    manifest = build(model, tmp_path / "b")
    assert [v.name for v in manifest.variants] == ["fp32", "fp16", "bf16"]
    assert manifest.variant("fp32").quality["score"] == 200.0  # identical weights
    assert manifest.variant("fp16").quality["score"] > manifest.variant("bf16").quality["score"]
    bf16 = read_checkpoint(tmp_path / "b" / "model-bf16.safetensors")
    assert bf16.tensors["encoder.weight"][0] == "BF16"
    assert bf16.tensors["positions"][0] == "I64"
    np.testing.assert_array_equal(bf16.tensors["positions"][1], np.arange(16))
    assert bf16.metadata == {"format": "np"}
    # The bf16 file is readable by the safetensors package itself.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "b" / "model-fp16.safetensors"), "np") as f:
        assert f.get_tensor("encoder.weight").dtype == np.float16


# --- bad inputs ---------------------------------------------------------------------------


def test_unknown_variant_names_the_formats_variants(tmp_path: Path) -> None:
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    with pytest.raises(BuildError, match=r"unknown variant 'Q4_0' for a onnx model.*fp32, fp16"):
        build(model, tmp_path / "b", variants=["Q4_0"])
    assert not (tmp_path / "b").exists()


def test_existing_bundle_is_refused_unless_forced(tmp_path: Path) -> None:
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "keep.txt").write_text("operator's file")
    with pytest.raises(BuildError, match="already exists; pass --force"):
        build(model, bundle, variants=["fp32"])
    assert (bundle / "keep.txt").exists()
    build(model, bundle, variants=["fp32"], force=True)
    assert not (bundle / "keep.txt").exists()
    assert (bundle / "manifest.json").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 63), np.float32)}, "has shape \\[2, 63\\], expected x"),
        ({"y": np.zeros((2, 64), np.float32)}, "does not take"),
        ({}, "lacks input"),
        ({"x": np.full((2, 64), np.nan, np.float32)}, "NaN"),
        ({"x": np.array([["a"] * 64])}, "holds str"),
    ],
)
def test_bad_probe_is_refused(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    probe = tmp_path / "probe.npz"
    np.savez(probe, **arrays)
    with pytest.raises(BuildError, match=message):
        build(model, tmp_path / "b", probe=probe)
    assert not (tmp_path / "b").exists()


def test_probe_that_is_not_an_npz_is_refused(tmp_path: Path) -> None:
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    probe = tmp_path / "probe.npz"
    probe.write_bytes(b"not a zip archive")
    with pytest.raises(BuildError, match=r"not a readable \.npz"):
        build(model, tmp_path / "b", probe=probe)


def test_probe_for_a_gguf_model_is_refused(tmp_path: Path) -> None:
    model = tiny_llm_gguf(tmp_path / "llm.gguf")
    probe = tmp_path / "probe.npz"
    np.savez(probe, x=np.zeros(3))
    with pytest.raises(BuildError, match="--probe applies to ONNX"):
        build(model, tmp_path / "b", probe=probe)


def test_int4_without_matmul_is_skipped_by_default_and_refused_when_asked(
    tmp_path: Path,
) -> None:
    model = no_matmul_onnx(tmp_path / "affine.onnx")
    with pytest.raises(BuildError, match=r"int4 .*needs MatMul"):
        build(model, tmp_path / "b", variants=["int4"])
    manifest = build(model, tmp_path / "b2")
    assert [v.name for v in manifest.variants] == ["fp32", "fp16"]
    assert {s["variant"] for s in manifest.skipped} == {"int8", "int4"}


def test_a_file_that_is_no_model_is_refused(tmp_path: Path) -> None:
    from edgeota.errors import FormatError

    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(FormatError, match="not an ONNX, GGUF or safetensors model"):
        build(junk, tmp_path / "b")


def test_build_is_logged_as_a_real_mlflow_run(tmp_path: Path, mlflow_store: str | None) -> None:
    """With the `tracking` extra (mlflow-skinny) and a SQLite tracking store (conftest): the
    run holds the build's parameters, per-variant metrics and the bundle's two descriptions."""
    if mlflow_store is None:
        skip_or_fail("mlflow is not installed (pip install 'edgeota[tracking]')")
    from mlflow.tracking import MlflowClient

    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    manifest = build(model, tmp_path / "b", variants=["fp32", "int8"])
    assert manifest.mlflow_run_id is not None
    client = MlflowClient(mlflow_store)
    run = client.get_run(manifest.mlflow_run_id)
    assert run.data.params["format"] == "onnx"
    assert run.data.params["variants"] == "fp32,int8"
    assert run.data.metrics["int8.bytes"] == manifest.variant("int8").bytes
    fp32 = manifest.variant("fp32")
    assert run.data.metrics["fp32.quality"] == pytest.approx(fp32.quality["score"])
    assert "int8.peak_rss_mb" in run.data.metrics
    artifacts = sorted(a.path for a in client.list_artifacts(manifest.mlflow_run_id))
    assert artifacts == ["manifest.json", "release.json"]


def test_a_failing_tracking_store_does_not_fail_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.machinery
    import sys
    import types

    def start_run(**_kw: object) -> object:
        raise ConnectionError("tracking server http://mlflow:5000 is down\nsecond line")

    fake = types.ModuleType("mlflow")
    fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    fake.start_run = start_run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    said: list[str] = []
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    manifest = build_bundle(
        model, tmp_path / "b", BuildOptions(repeat=FAST, variants=["fp32"]), progress=said.append
    )
    assert manifest.mlflow_run_id is None
    saved = load_manifest(tmp_path / "b")
    assert saved.variant("fp32").bytes > 0
    assert "not logged to MLflow: tracking server http://mlflow:5000 is down" in saved.notes
    assert "logging the build to MLflow" in said


def test_build_is_logged_to_mlflow_when_it_is_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.machinery
    import sys
    import types

    calls: dict[str, object] = {}

    class Run:
        info = types.SimpleNamespace(run_id="run-123")

        def __enter__(self) -> Run:
            return self

        def __exit__(self, *exc: object) -> None:
            calls["ended"] = True

    fake = types.ModuleType("mlflow")
    fake.__spec__ = importlib.machinery.ModuleSpec("mlflow", None)
    fake.start_run = lambda **kw: calls.setdefault("run", Run())  # type: ignore[attr-defined]
    fake.log_params = lambda p: calls.setdefault("params", p)  # type: ignore[attr-defined]
    fake.log_metrics = lambda m: calls.setdefault("metrics", m)  # type: ignore[attr-defined]
    fake.log_artifact = lambda p: calls.setdefault("artifacts", []).append(Path(p).name)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    model = image_mlp_onnx(tmp_path / "mlp.onnx")
    manifest = build(model, tmp_path / "b", variants=["fp32"])
    assert manifest.mlflow_run_id == "run-123"
    assert load_manifest(tmp_path / "b").mlflow_run_id == "run-123"
    assert calls["params"]["format"] == "onnx"  # type: ignore[index]
    assert "fp32.peak_rss_mb" in calls["metrics"]  # type: ignore[operator]
    assert calls["artifacts"] == ["manifest.json", "release.json"]
