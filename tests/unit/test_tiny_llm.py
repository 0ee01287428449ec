"""The tiny GGUF LLM edgeota builds itself: a GGUF llama.cpp can load, and a model that
predicts something (checked here with numpy, without llama.cpp)."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgeota.modelops import gguf_variants
from edgeota.modelops.tiny_llm import (
    BOS,
    EOS,
    SPACE,
    TEXT,
    VOCAB_SIZE,
    TinyLlmConfig,
    build_tensors,
    decode,
    encode,
    write_tiny_llm,
)

BLOCK_TENSORS = {
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llm(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def metadata(reader: gguf.GGUFReader) -> dict[str, object]:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def test_gguf_has_every_tensor_llama_needs_in_f32_and_stays_small(model: Path) -> None:
    config = TinyLlmConfig()
    reader = gguf.GGUFReader(str(model))
    tensors = {t.name: t for t in reader.tensors}
    expected = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{name}.weight" for i in range(config.layers) for name in BLOCK_TENSORS
    }
    assert set(tensors) == expected
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in reader.tensors)
    # ggml order: [row length, rows]
    assert list(tensors["token_embd.weight"].shape) == [config.embd, VOCAB_SIZE]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [config.embd, 32]  # 2 KV heads x 16
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [config.feed_forward, config.embd]
    assert model.stat().st_size < 1024 * 1024


def test_metadata_describes_a_llama_model_and_its_byte_tokenizer(model: Path) -> None:
    meta = metadata(gguf.GGUFReader(str(model)))
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 2
    assert meta["llama.embedding_length"] == 64
    assert meta["llama.attention.head_count"] == 4
    assert meta["llama.attention.head_count_kv"] == 2
    assert meta["llama.rope.dimension_count"] == 16
    assert meta["tokenizer.ggml.model"] == "llama"
    tokens = meta["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == VOCAB_SIZE
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3 + ord("a")] == "<0x61>" and tokens[SPACE] == "\u2581"
    assert meta["tokenizer.ggml.token_type"][3] == int(gguf.TokenType.BYTE)  # type: ignore[index]
    assert meta["tokenizer.ggml.bos_token_id"] == BOS
    assert meta["tokenizer.ggml.eos_token_id"] == EOS
    assert meta["tokenizer.ggml.add_space_prefix"] is False


def test_encode_is_byte_level_with_the_sentencepiece_space() -> None:
    ids = encode("a b\u00e9")
    assert ids == [BOS, 3 + ord("a"), SPACE, 3 + ord("b"), 3 + 0xC3, 3 + 0xA9]
    assert decode(ids) == "a b\u00e9"


def test_same_seed_same_file_other_seed_other_weights(tmp_path: Path) -> None:
    a = write_tiny_llm(tmp_path / "a.gguf").read_bytes()
    b = write_tiny_llm(tmp_path / "b.gguf").read_bytes()
    c = write_tiny_llm(tmp_path / "c.gguf", TinyLlmConfig(seed=1)).read_bytes()
    assert a == b
    assert a != c


def bigram_predictions(tensors: dict[str, np.ndarray]) -> np.ndarray:
    """Next-token logits from the embeddings alone (RMS norm, then the output matrix)."""
    x = tensors["token_embd.weight"].astype(np.float64)
    x = x / np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-5)
    return x @ tensors["output.weight"].astype(np.float64).T


def test_predictions_follow_the_text_it_was_fitted_to() -> None:
    logits = bigram_predictions(build_tensors(TinyLlmConfig()))
    ids = encode(TEXT)
    successors: dict[int, Counter[int]] = {}
    for a, b in itertools.pairwise(ids):
        successors.setdefault(a, Counter())[b] += 1
    # Where the text has a clear favourite successor, the model predicts it.
    clear = {
        a: c.most_common(1)[0][0]
        for a, c in successors.items()
        if len(c) == 1 or c.most_common(2)[0][1] > c.most_common(2)[1][1]
    }
    hits = sum(int(np.argmax(logits[a]) == b) for a, b in clear.items())
    assert len(clear) > 20
    assert hits / len(clear) > 0.95
    # Far from uniform: the entropy after "t" is a small part of log(vocab).
    probs = np.exp(logits[3 + ord("t")] - logits[3 + ord("t")].max())
    probs /= probs.sum()
    entropy = -float(np.sum(probs * np.log(probs)))
    assert entropy < 0.5 * np.log(VOCAB_SIZE)


def test_q4_0_quantizes_every_matrix_of_the_tiny_model(model: Path, tmp_path: Path) -> None:
    source = gguf_variants.read_source(model)
    out = tmp_path / "q4.gguf"
    gguf_variants.write_variant(source, "Q4_0", out)
    reader = gguf.GGUFReader(str(out))
    for t in reader.tensors:
        expected = (
            gguf.GGMLQuantizationType.F32 if len(t.shape) == 1 else gguf.GGMLQuantizationType.Q4_0
        )
        assert t.tensor_type == expected, t.name
    # Tokenizer metadata survives the copy.
    meta = metadata(reader)
    assert (
        meta["tokenizer.ggml.tokens"]
        == metadata(gguf.GGUFReader(str(model)))["tokenizer.ggml.tokens"]
    )
    assert meta["tokenizer.ggml.add_space_prefix"] is False
