"""Small, checked edits of ONNX graphs: fix an exported output shape, poison an output.

Each function returns a new ``ModelProto`` and leaves its argument untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

ModelProto = Any  # onnx ships no type information


def _rename_tensor(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _single_output(graph: Any) -> Any:
    if len(graph.output) != 1:
        raise ValueError(f"expected a graph with one output, found {len(graph.output)}")
    return graph.output[0]


def reshape_output(
    model: ModelProto, width: int, name: str, graph_name: str | None = None
) -> ModelProto:
    """Make the single output a ``[batch, width]`` tensor called ``name``.

    skl2onnx declares a multi-output regressor's output as ``[None, 1]`` and ends the graph
    with ``Reshape(x, [-1, 1])``, so a batch of N images comes back as ``(N * width, 1)``.
    Appending ``Reshape(x, [-1, width])`` restores ``(N, width)`` whatever the exporter did;
    a reshape copies nothing, so it costs nothing at inference time.
    """
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    graph = edited.graph
    output = _single_output(graph)
    flat = f"{name}_flat"
    _rename_tensor(graph, output.name, flat)
    shape_name = f"{name}_shape"
    graph.initializer.append(
        numpy_helper.from_array(np.array([-1, width], dtype=np.int64), shape_name)
    )
    graph.node.append(
        helper.make_node("Reshape", [flat, shape_name], [name], name=f"{name}_reshape")
    )
    elem_type = output.type.tensor_type.elem_type
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(name, elem_type, [None, width]))
    if graph_name is not None:
        # Exporters name graphs with a random UUID; a fixed name keeps the bytes, and so the
        # content-derived release ID, reproducible.
        graph.name = graph_name
    onnx.checker.check_model(edited)
    return edited


def poison_output_with_nan(model: ModelProto) -> ModelProto:
    """Multiply the single output by NaN: a model that loads and runs but whose outputs are NaN.

    Used to build a deliberately broken release for testing health checks and rollback.
    """
    edited = onnx.ModelProto()
    edited.CopyFrom(model)
    graph = edited.graph
    output = _single_output(graph)
    if output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ValueError(f"output {output.name!r} is not float32; cannot multiply it by NaN")
    clean = f"{output.name}_before_nan"
    _rename_tensor(graph, output.name, clean)
    nan_name = f"{output.name}_nan"
    graph.initializer.append(numpy_helper.from_array(np.array(np.nan, dtype=np.float32), nan_name))
    graph.node.append(helper.make_node("Mul", [clean, nan_name], [output.name], name=nan_name))
    onnx.checker.check_model(edited)
    return edited
