"""The LLM quality gate without llama.cpp: agreement in the probe comparison, the build's
figures and bounds, and the runtime's error when llama-cpp-python is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeota.errors import FormatError
from edgeota.modelops.quality import AGREEMENT_SLACK, token_quality, token_tolerance_for
from edgeota.runtime import llm
from edgeota.runtime.llm import NEXT_TOKEN, TOKEN_LOGPROB
from edgeota.runtime.probe import MIN_AGREEMENT, check_tolerance, compare_outputs

REFERENCE = np.arange(40, dtype=np.int32).reshape(4, 10)


def flipped(count: int) -> np.ndarray:
    out = REFERENCE.astype(np.float64).copy()  # the health check parses JSON into float64
    out.flat[:count] += 1
    return out


def test_agreement_at_the_bound_passes_and_one_flip_more_fails() -> None:
    tolerance = {MIN_AGREEMENT: 0.9}
    ok = compare_outputs({NEXT_TOKEN: flipped(4)}, {NEXT_TOKEN: REFERENCE}, tolerance)
    assert ok.ok and ok.figures["agreement"] == pytest.approx(0.9)
    bad = compare_outputs({NEXT_TOKEN: flipped(5)}, {NEXT_TOKEN: REFERENCE}, tolerance)
    assert not bad.ok
    assert bad.reason == "agreement 0.8750 with the reference outputs is below the tolerance 0.9000"


def test_agreement_is_only_reported_when_the_tolerance_bounds_it() -> None:
    result = compare_outputs({NEXT_TOKEN: flipped(1)}, {NEXT_TOKEN: REFERENCE}, {})
    assert result.ok and "agreement" not in result.figures


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_min_agreement_outside_zero_to_one_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="min_agreement is a share"):
        check_tolerance({MIN_AGREEMENT: share})


def scored(next_token: np.ndarray, logprob: float) -> dict[str, np.ndarray]:
    return {NEXT_TOKEN: next_token, TOKEN_LOGPROB: np.full((4, 9), logprob, np.float32)}


def test_token_quality_gives_agreement_and_perplexity_change() -> None:
    original = scored(REFERENCE, -2.0)
    variant = scored(flipped(8).astype(np.int32), -2.1)
    quality = token_quality(variant, original)
    assert quality.metric == "agreement" and quality.basis == "outputs"
    assert quality.score == pytest.approx(0.8)
    assert quality.figures["perplexity_change"] == pytest.approx(np.exp(0.1) - 1, rel=1e-4)
    tolerance = token_tolerance_for(quality, latency_ms=2.0, peak_rss_mb=50.0)
    assert tolerance[MIN_AGREEMENT] == pytest.approx(0.8 - AGREEMENT_SLACK)
    assert tolerance["max_latency_ms"] == 1040.0 and tolerance["max_peak_rss_mb"] == 164.0
    check_tolerance(tolerance)


def test_a_variant_with_non_finite_logprobs_gets_the_worst_score() -> None:
    quality = token_quality(scored(REFERENCE, float("nan")), scored(REFERENCE, -2.0))
    assert quality.score == -np.inf


def test_without_llama_cpp_a_gguf_model_is_refused_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(llm, "llama_cpp_available", lambda: False)
    with pytest.raises(FormatError, match=r"llama-cpp-python is not installed.*edgeota\[llm\]"):
        llm.LlamaSession(tmp_path / "model.gguf")


def test_the_runtime_service_imports_neither_backend_before_it_loads_a_model() -> None:
    code = (
        "import sys, json, edgeota.runtime.server, edgeota.runtime.slotmodel;"
        "print(json.dumps(['llama_cpp' in sys.modules, 'onnxruntime' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [False, False]


def test_without_llama_cpp_the_build_scores_the_weights_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from edgeota.modelops import build_gguf
    from edgeota.modelops.bundle import BuildOptions, build_bundle
    from edgeota.modelops.tiny_llm import write_tiny_llm

    monkeypatch.setattr(build_gguf, "llama_cpp_available", lambda: False)
    model = write_tiny_llm(tmp_path / "tiny.gguf")
    manifest = build_bundle(model, tmp_path / "b", BuildOptions(repeat=1, variants=["Q4_0"]))
    assert manifest.metric["name"] == "weight_snr_db"
    assert any("llama-cpp-python is not installed" in note for note in manifest.notes)
    (record,) = manifest.variants
    assert record.quality["basis"] == "weights" and record.probe_file is None
    assert record.measured is not None and record.measured["what"] == "load"
