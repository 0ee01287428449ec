"""ONNX deltas: initializers (raw_data and float_data), Constant node tensors, graph edits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeota.delta import Method, apply_patch, create_patch
from edgeota.delta.container_onnx import parse


def build(path: Path, weights: dict[str, np.ndarray], *, extra_node: bool = False) -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["z"]),
        helper.make_node(
            "Constant", [], ["c"], value=numpy_helper.from_array(weights["const"], "const")
        ),
        helper.make_node("Mul", ["z", "c"], ["y"]),
    ]
    if extra_node:
        nodes.append(helper.make_node("Relu", ["y"], ["y2"]))
    inits = [
        numpy_helper.from_array(weights["w1"], "w1"),
        # float_data instead of raw_data: a packed field the parser must also find.
        helper.make_tensor("b1", TensorProto.FLOAT, weights["b1"].shape, weights["b1"].tolist()),
    ]
    out = "y2" if extra_node else "y"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 48])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 64])],
        inits,
    )
    onnx.save_model(helper.make_model(graph), str(path))


def weights(rng: np.random.Generator, scale: float) -> dict[str, np.ndarray]:
    base = np.random.default_rng(0)
    w = {
        "w1": base.standard_normal((48, 64)).astype(np.float32),
        "b1": base.standard_normal(64).astype(np.float32),
        "const": base.standard_normal(64).astype(np.float32),
    }
    return {
        k: (v * (1 + scale * rng.standard_normal(v.shape))).astype(np.float32) for k, v in w.items()
    }


def test_parser_finds_every_tensor(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    build(path, weights(np.random.default_rng(1), 0.0))
    layout = parse(memoryview(path.read_bytes()))
    assert layout is not None
    found = {t.name: t for t in layout.tensors}
    assert {"w1", "b1", "const"} <= set(found)
    assert found["w1"].layout.shape == (48, 64)
    assert found["w1"].length == 48 * 64 * 4


@pytest.mark.parametrize("extra_node", [False, True])
def test_fine_tuned_initializers_round_trip(tmp_path: Path, extra_node: bool) -> None:
    rng = np.random.default_rng(2)
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    build(old, weights(rng, 0.0))
    build(new, weights(rng, 1e-3), extra_node=extra_node)
    patch, out = tmp_path / "p.delta", tmp_path / "out.onnx"
    info = create_patch(old, new, patch)
    apply_patch(old, patch, out)
    assert out.read_bytes() == new.read_bytes()
    assert info.container == "onnx"
    assert any(s.method is Method.TENSOR_SUB for s in info.sections)
    assert info.patch_size < 0.75 * info.new_size
    onnx.checker.check_model(onnx.load(str(out)))


def test_unchanged_weights_with_a_graph_edit_cost_copies(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = weights(rng, 0.0)
    old, new = tmp_path / "old.onnx", tmp_path / "new.onnx"
    build(old, w)
    build(new, w, extra_node=True)
    patch, out = tmp_path / "p.delta", tmp_path / "out.onnx"
    info = create_patch(old, new, patch)
    apply_patch(old, patch, out)
    assert out.read_bytes() == new.read_bytes()
    assert info.patch_size < 600
