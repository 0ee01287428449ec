"""A tiny llama-architecture GGUF LLM that edgeota builds itself, since none may be downloaded.

It exists so the GGUF path of ``edgeota model build`` and the runtime's llama.cpp backend can
be tested and demonstrated end to end with a real LLM: llama.cpp loads it, tokenizes text
with it, and generates from it. It is about half a megabyte in F32.

**What it predicts.** Its next-token distribution is a byte-level bigram model fitted to a
short text (:data:`TEXT`): the smoothed log-probabilities of the bigram counts, factored by
SVD into the token embedding and output matrices (no gradient descent; it takes
milliseconds). llama's RMS norm divides each embedding by its own scale, which would undo
the factorization, so every embedding row gets one extra component that makes all rows
equally long: the norm then scales all of them alike. The attention and feed-forward blocks
hold small seeded random weights: predictions depend a little on the context (the KV cache is
used), the bigram signal still dominates, and quantization has every kind of tensor to round.

**Vocabulary.** SentencePiece type (``llama``), which llama.cpp tokenizes with byte fallback:
``<unk>``, ``<s>``, ``</s>``, the 256 byte tokens ``<0x00>`` .. ``<0xFF>``, and ``▁`` (the
space). No space is prepended, so :func:`encode` gives exactly llama.cpp's token IDs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from edgeota.runtime.probe import Array

UNK, BOS, EOS = 0, 1, 2
BYTE_BASE = 3  # token of byte b is BYTE_BASE + b
SPACE = BYTE_BASE + 256  # "▁", SentencePiece's escaped space
VOCAB_SIZE = SPACE + 1
SPACE_PIECE = "\u2581"

# The text the bigram statistics come from: plain English about the project's own subject.
TEXT = (
    "An edge device keeps two slots for its model. The agent downloads the new release into "
    "the spare slot, checks every file against its signed hash, and then switches the slots. "
    "After the switch the runtime starts on the new model and the agent runs the health check: "
    "the probe set goes to the model, and the outputs are compared with the reference outputs "
    "that were signed with the release. When the check passes, the device commits the update "
    "and reports the new version to the server. When the check fails, the device switches back "
    "to the old slot, starts the old model again, and tells the server why the update failed. "
    "The server then holds the rollout, so the other devices in the group keep the old release "
    "until an operator looks at the report. A model that is quantized to fewer bits is smaller "
    "and faster, but its outputs move away from the outputs of the original model; the build "
    "measures how far, and the release carries the bound that the device holds it to. "
)


@dataclass(frozen=True)
class TinyLlmConfig:
    """The shape of the tiny model. Row lengths (``embd``, ``feed_forward``) are multiples of
    32, so Q8_0 and Q4_0 quantize every matrix, as they would in a real LLM."""

    layers: int = 2
    embd: int = 64
    heads: int = 4
    kv_heads: int = 2
    feed_forward: int = 128
    context: int = 256
    seed: int = 0
    text: str = TEXT
    # Size of the blocks' contribution to the residual stream, relative to the embeddings'.
    block_scale: float = 0.1
    # Random logit jitter that breaks exact ties between equally frequent successors.
    tie_jitter: float = 0.02
    rms_eps: float = 1e-5


def token_pieces() -> list[str]:
    """The vocabulary as llama.cpp reads it (``tokenizer.ggml.tokens``)."""
    return ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), SPACE_PIECE]


def token_types() -> list[int]:
    kinds = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    kinds += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL]
    return [int(k) for k in kinds]


def encode(text: str, *, bos: bool = True) -> list[int]:
    """Token IDs of ``text``: spaces are ``▁``, everything else its UTF-8 bytes."""
    ids = [BOS] if bos else []
    for char in text:
        if char == " ":
            ids.append(SPACE)
        else:
            ids.extend(BYTE_BASE + b for b in char.encode("utf-8"))
    return ids


def decode(ids: list[int]) -> str:
    """The text of token IDs (control tokens are dropped)."""
    out = bytearray()
    for i in ids:
        if i == SPACE:
            out += b" "
        elif BYTE_BASE <= i < SPACE:
            out.append(i - BYTE_BASE)
    return out.decode("utf-8", errors="replace")


def bigram_log_probs(text: str, jitter: float, rng: np.random.Generator) -> Array:
    """``[vocab, vocab]`` log P(next | current), backed off to the unigram distribution so
    unseen contexts still prefer frequent tokens, with rows centred (softmax ignores a
    row's constant, and centring keeps the factors small)."""
    ids = np.asarray(encode(text), dtype=np.int64)
    counts = np.zeros((VOCAB_SIZE, VOCAB_SIZE), dtype=np.float64)
    np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
    unigram = np.bincount(ids, minlength=VOCAB_SIZE).astype(np.float64) + 0.01
    unigram /= unigram.sum()
    probs = (counts + unigram) / (counts.sum(axis=1, keepdims=True) + 1.0)
    logp: Array = np.log(probs) + rng.uniform(0.0, jitter, size=probs.shape)
    centred: Array = logp - logp.mean(axis=1, keepdims=True)
    return centred


def fit_embeddings(target: Array, embd: int) -> tuple[Array, Array]:
    """(token embedding, output matrix), both ``[vocab, embd]``, such that
    ``output @ rms_norm(embedding[t])`` is the best rank ``embd - 1`` fit of ``target[t]``."""
    u, s, vt = np.linalg.svd(target)
    rank = embd - 1
    a = u[:, :rank] * np.sqrt(s[:rank])
    b = vt[:rank].T * np.sqrt(s[:rank])
    lengths = np.sum(a * a, axis=1)
    total = float(lengths.max()) * 1.05 + 1e-6  # every row's squared length after padding
    embedding = np.concatenate([a, np.sqrt(total - lengths)[:, None]], axis=1)
    # RMS norm maps each row to embedding * sqrt(embd / total): undo that factor here.
    output = np.concatenate([b, np.zeros((VOCAB_SIZE, 1))], axis=1) * np.sqrt(total / embd)
    return embedding.astype(np.float32), output.astype(np.float32)


def build_tensors(config: TinyLlmConfig) -> dict[str, Array]:
    """Every tensor of the model, named and shaped as llama.cpp's llama architecture wants
    them (numpy shape ``[out, in]``: y = W @ x)."""
    if config.embd % config.heads or config.heads % config.kv_heads:
        raise ValueError("embd must divide into heads, and heads into kv_heads")
    rng = np.random.default_rng(config.seed)
    embedding, output = fit_embeddings(
        bigram_log_probs(config.text, config.tie_jitter, rng), config.embd
    )
    d, ff = config.embd, config.feed_forward
    kv = config.kv_heads * (d // config.heads)
    # The residual stream's RMS; the blocks add about block_scale of it.
    stream = float(np.sqrt(np.mean(embedding.astype(np.float64) ** 2)))

    def matrix(rows: int, cols: int, scale: float) -> Array:
        values: Array = rng.standard_normal((rows, cols)) * (scale / np.sqrt(cols))
        return values.astype(np.float32)

    tensors = {"token_embd.weight": embedding}
    for i in range(config.layers):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = np.ones(d, np.float32)
        tensors[p + "attn_q.weight"] = matrix(d, d, 1.0)
        tensors[p + "attn_k.weight"] = matrix(kv, d, 1.0)
        tensors[p + "attn_v.weight"] = matrix(kv, d, 1.0)
        tensors[p + "attn_output.weight"] = matrix(d, d, config.block_scale * stream)
        tensors[p + "ffn_norm.weight"] = np.ones(d, np.float32)
        tensors[p + "ffn_gate.weight"] = matrix(ff, d, 1.0)
        tensors[p + "ffn_up.weight"] = matrix(ff, d, 1.0)
        tensors[p + "ffn_down.weight"] = matrix(d, ff, 2.0 * config.block_scale * stream)
    tensors["output_norm.weight"] = np.ones(d, np.float32)
    tensors["output.weight"] = output
    return tensors


def write_tiny_llm(path: Path, config: TinyLlmConfig | None = None) -> Path:
    """Write the tiny model as an F32 GGUF file at ``path``; return ``path``."""
    config = config or TinyLlmConfig()
    tensors = build_tensors(config)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("edgeota-tiny-llm")
    writer.add_description("byte-level bigram LLM fitted by edgeota.modelops.tiny_llm")
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_context_length(config.context)
    writer.add_embedding_length(config.embd)
    writer.add_block_count(config.layers)
    writer.add_feed_forward_length(config.feed_forward)
    writer.add_head_count(config.heads)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_rope_dimension_count(config.embd // config.heads)
    writer.add_layer_norm_rms_eps(config.rms_eps)
    writer.add_vocab_size(VOCAB_SIZE)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(token_pieces())
    writer.add_token_scores([0.0] * VOCAB_SIZE)
    writer.add_token_types(token_types())
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_unk_token_id(UNK)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    logger = logging.getLogger("gguf")
    level = logger.level
    logger.setLevel(logging.WARNING)  # the writer logs every file it writes at INFO
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
        logger.setLevel(level)
    return path
