"""GGUF LLMs end to end under llama.cpp: the tiny model edgeota builds itself, its variants
built and measured, served by the runtime, and held to their agreement by the health check."""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from edgeota.agent.health import check_runtime_health
from edgeota.modelops import gguf_variants
from edgeota.modelops.bundle import BuildOptions, build_bundle
from edgeota.modelops.manifest import Manifest
from edgeota.modelops.tiny_llm import encode, write_tiny_llm
from edgeota.releasefolder import load_release
from edgeota.runtime.llm import llama_cpp_available
from edgeota.runtime.probe import MIN_AGREEMENT
from edgeota.slotinfo import SlotFile, SlotInfo
from harness import wait_until_healthy
from support import skip_or_fail

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _needs_llama_cpp() -> None:
    if not llama_cpp_available():
        skip_or_fail(
            "llama-cpp-python is not installed (pip install 'edgeota[llm]', "
            "CMAKE_ARGS=-DGGML_NATIVE=OFF): GGUF LLMs cannot be served"
        )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Manifest]:
    work = tmp_path_factory.mktemp("llm")
    model = write_tiny_llm(work / "tiny.gguf")
    out = work / "bundle"
    return model, out, build_bundle(model, out, BuildOptions(repeat=2))


def install(files: dict[str, Path], slot: Path, tolerance: dict[str, float]) -> SlotInfo:
    """Put a model (and probe) into a slot and describe it, as the agent does."""
    slot.mkdir(parents=True)
    entries, digest = [], hashlib.sha256()
    for role, source in files.items():
        data = source.read_bytes()
        (slot / source.name).write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        digest.update(sha.encode())
        entries.append(SlotFile(source.name, role, sha, len(data)))
    info = SlotInfo("llm", "1.0.0", f"rel-{digest.hexdigest()[:16]}", tuple(entries), tolerance)
    info.write(slot)
    return info


def install_variant(bundle: Path, manifest: Manifest, name: str, slot: Path) -> SlotInfo:
    record = manifest.variant(name)
    assert record.probe_file is not None and record.tolerance is not None
    files = {"model": bundle / record.file, "probe": bundle / record.probe_file}
    return install(files, slot, record.tolerance)


@contextmanager
def runtime(slot: Path) -> Iterator[str]:
    """The runtime service as the agent starts it: its own process, so the peak RSS it
    reports is its own, and llama.cpp never loads into the test process."""
    ready_file = slot.parent / f"{slot.name}-ready.json"
    argv = [sys.executable, "-m", "edgeota.runtime.server", "--slot-dir", str(slot)]
    argv += ["--port", "0", "--ready-file", str(ready_file)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield wait_until_healthy(proc, ready_file, timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr.decode()
        assert not ready_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_every_variant_is_measured_in_llama_cpp_against_the_original(
    bundle: tuple[Path, Path, Manifest],
) -> None:
    _, out, manifest = bundle
    assert [v.name for v in manifest.variants] == ["F16", "Q8_0", "Q4_0"]
    assert manifest.metric["name"] == "agreement"
    assert manifest.metric["runtime"].startswith("llama-cpp-python ")
    assert manifest.probe is not None and manifest.probe["examples"] == 8
    agreement = {}
    for v in manifest.variants:
        assert v.measured is not None and v.measured["what"] == "load+probe"
        assert v.measured["runtime"] == manifest.metric["runtime"]
        assert v.measured["peak_rss_mb"] > 0 and v.measured["median_ms"] > 0
        assert v.quality["basis"] == "outputs"
        assert "perplexity_change" in v.quality and "weight_snr_db" in v.quality
        assert v.tolerance is not None
        assert v.tolerance[MIN_AGREEMENT] <= v.quality["score"]
        agreement[v.name] = v.quality["score"]
    assert agreement["F16"] >= 0.99
    assert agreement["F16"] >= agreement["Q8_0"] >= agreement["Q4_0"] > 0.5
    sizes = {v.name: v.bytes for v in manifest.variants}
    assert sizes["Q4_0"] < sizes["Q8_0"] < sizes["F16"]
    probes = {f.variant: f for f in load_release(out).files if f.role == "probe"}
    assert set(probes) == {"F16", "Q8_0", "Q4_0"}
    assert probes["Q4_0"].tolerance == manifest.variant("Q4_0").tolerance


def test_runtime_serves_the_llm_and_generates_its_greedy_continuation(
    bundle: tuple[Path, Path, Manifest], tmp_path: Path
) -> None:
    _, out, manifest = bundle
    install_variant(out, manifest, "Q8_0", tmp_path / "slot")
    prompt = "the device "
    with runtime(tmp_path / "slot") as url, httpx.Client(timeout=30) as client:
        described = client.get(f"{url}/v1/model").json()
        assert described["kind"] == "llm" and described["vocab_size"] == 260
        generated = client.post(f"{url}/v1/generate", json={"prompt": prompt, "max_tokens": 12})
        assert generated.status_code == 200, generated.text
        body = generated.json()
        assert body["finish_reason"] == "length" and len(body["tokens"]) == 12
        assert body["prompt_tokens"] == len(encode(prompt))  # llama.cpp tokenizes as we do
        assert body["text"] and body["peak_rss_mb"] > 0
        # Greedy: each generated token is the model's top-1 after the tokens before it.
        ids = encode(prompt) + body["tokens"]
        scored = client.post(f"{url}/v1/infer", json={"inputs": {"tokens": [ids]}}).json()
        next_token = scored["outputs"]["next_token"][0]
        assert next_token[len(encode(prompt)) - 1 : -1] == body["tokens"]
        refused = client.post(f"{url}/v1/infer", json={"inputs": {"tokens": [[1, 99999]]}})
        assert refused.status_code == 422 and "token IDs must lie in" in refused.text
        refused = client.post(f"{url}/v1/generate", json={"prompt": prompt, "max_tokens": 0})
        assert refused.status_code == 422 and "max_tokens must be between" in refused.text


@pytest.mark.parametrize("variant", ["F16", "Q8_0", "Q4_0"])
def test_each_variant_passes_the_health_check_with_its_own_probe(
    bundle: tuple[Path, Path, Manifest], tmp_path: Path, variant: str
) -> None:
    _, out, manifest = bundle
    install_variant(out, manifest, variant, tmp_path / "slot")
    with runtime(tmp_path / "slot") as url, httpx.Client() as client:
        report = check_runtime_health(url, tmp_path / "slot", client, timeout_s=60)
    assert report.ok, report.reason
    assert report.figures["agreement"] == pytest.approx(
        manifest.variant(variant).quality["score"], abs=0.02
    )


def test_badly_quantized_variant_fails_the_agreement_check(
    bundle: tuple[Path, Path, Manifest], tmp_path: Path
) -> None:
    """A file whose weights were rounded to one bit each (sign times the tensor's mean size)
    is still a valid GGUF that llama.cpp loads and runs; only the probe can tell."""
    model, out, manifest = bundle
    source = gguf_variants.read_source(model)
    crushed = {
        name: (np.sign(w) * np.abs(w).mean()).astype(np.float32) if w.ndim == 2 else w
        for name, w in source.tensors.items()
    }
    bad = tmp_path / "model-Q8_0.gguf"
    gguf_variants.write_variant(dataclasses.replace(source, tensors=crushed), "Q8_0", bad)
    record = manifest.variant("Q8_0")
    assert record.probe_file is not None and record.tolerance is not None
    install({"model": bad, "probe": out / record.probe_file}, tmp_path / "slot", record.tolerance)
    with runtime(tmp_path / "slot") as url, httpx.Client() as client:
        report = check_runtime_health(url, tmp_path / "slot", client, timeout_s=60)
    assert not report.ok
    # Only the agreement fails: the file loads, runs as fast and fits the same memory.
    assert report.reason is not None and report.reason.startswith("agreement ")
    assert ";" not in report.reason
    assert f"below the tolerance {record.tolerance[MIN_AGREEMENT]:.4f}" in report.reason
    assert report.figures["agreement"] < record.tolerance[MIN_AGREEMENT]


def test_runtime_without_llama_cpp_exits_with_what_to_install(
    bundle: tuple[Path, Path, Manifest], tmp_path: Path
) -> None:
    """llama_cpp made unimportable in the runtime process: the clear error, not a traceback."""
    _, out, manifest = bundle
    install_variant(out, manifest, "Q4_0", tmp_path / "slot")
    code = (
        "import sys; sys.modules['llama_cpp'] = None;"
        "from edgeota.runtime.server import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "--slot-dir", str(tmp_path / "slot"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "llama-cpp-python is not installed" in done.stderr
    assert "pip install 'edgeota[llm]'" in done.stderr


def test_a_gguf_llama_cpp_cannot_run_is_scored_on_its_weights_and_says_why(
    tmp_path: Path,
) -> None:
    from modelfiles import tiny_llm_gguf  # llama-shaped, but without a tokenizer model

    model = tiny_llm_gguf(tmp_path / "not-runnable.gguf")
    manifest = build_bundle(model, tmp_path / "b", BuildOptions(repeat=1, variants=["Q8_0"]))
    assert manifest.metric["name"] == "weight_snr_db"
    assert manifest.metric["why"].startswith("llama.cpp cannot run this GGUF")
    (note,) = manifest.notes
    assert "Failed to load model from file" in note and "Traceback" not in note
    assert manifest.variants[0].probe_file is None
