"""Small, seeded model files in each format the model build takes (made here, not downloaded)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def image_mlp_onnx(path: Path, width: int = 64, hidden: int = 96, seed: int = 0) -> Path:
    """x [N, width] in [0, 1] -> sigmoid(relu(x W1 + b1) W2 + b2): image-like outputs."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((width, hidden)) * 0.3).astype(np.float32), "w1"
        ),
        numpy_helper.from_array((rng.standard_normal(hidden) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array(
            (rng.standard_normal((hidden, width)) * 0.3).astype(np.float32), "w2"
        ),
        numpy_helper.from_array((rng.standard_normal(width) * 0.1).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["o"]),
        helper.make_node("Add", ["o", "b2"], ["ob"]),
        helper.make_node("Sigmoid", ["ob"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "image_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


def embedding_onnx(path: Path, vocab: int = 300, dim: int = 64, seq: int = 8) -> Path:
    """tokens int64 [N, seq] -> mean over positions of (embed[tokens] W): an embedder."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype(np.float32), "embed"),
        numpy_helper.from_array((rng.standard_normal((dim, dim)) / 8).astype(np.float32), "proj"),
    ]
    nodes = [
        helper.make_node("Gather", ["embed", "tokens"], ["e"], axis=0),
        helper.make_node("MatMul", ["e", "proj"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["emb"], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "embedder",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", seq])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


def no_matmul_onnx(path: Path) -> Path:
    """y = x * 2 + 1 with float weights but nothing to quantize to int4."""
    inits = [
        numpy_helper.from_array(np.full(4, 2.0, np.float32), "scale"),
        numpy_helper.from_array(np.ones(4, np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["m"]),
        helper.make_node("Add", ["m", "bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


LLM = {"layers": 2, "embd": 64, "heads": 4, "kv_heads": 2, "context": 256, "vocab": 128}


def tiny_llm_gguf(path: Path) -> Path:
    """A llama-shaped GGUF with F32 weights and the metadata a KV cache estimate reads."""
    rng = np.random.default_rng(2)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llm")
    w.add_context_length(LLM["context"])
    w.add_block_count(LLM["layers"])
    w.add_embedding_length(LLM["embd"])
    w.add_head_count(LLM["heads"])
    w.add_head_count_kv(LLM["kv_heads"])
    w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(LLM["vocab"])])
    embd, vocab = LLM["embd"], LLM["vocab"]
    w.add_tensor("token_embd.weight", rng.standard_normal((vocab, embd)).astype(np.float32))
    for i in range(LLM["layers"]):
        w.add_tensor(f"blk.{i}.attn_q.weight", rng.standard_normal((embd, embd)).astype(np.float32))
        w.add_tensor(f"blk.{i}.ffn_up.weight", rng.standard_normal((96, embd)).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(embd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def checkpoint_safetensors(path: Path) -> Path:
    rng = np.random.default_rng(3)
    save_file(
        {
            "encoder.weight": rng.standard_normal((64, 32)).astype(np.float32),
            "encoder.bias": rng.standard_normal(32).astype(np.float32),
            "positions": np.arange(16, dtype=np.int64),
        },
        str(path),
        metadata={"format": "np"},
    )
    return path
