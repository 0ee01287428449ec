"""The inputs of an ONNX model's probe set: read from a user's ``.npz`` or generated.

A user's probe file holds one array per model input, keyed by the input's name (the
``input:<name>`` spelling of a release probe archive is accepted too). Without one, inputs
are generated from the model's declared inputs with a seeded generator, so the same model
and seed always give the same probe set.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeota.modelops.catalog import BuildError
from edgeota.runtime.probe import INPUT_PREFIX, REFERENCE_PREFIX, Array

DEFAULT_BATCH = 8
DEFAULT_FREE_DIM = 16  # a symbolic dimension other than the batch (say, a sequence length)
DEFAULT_INT_HIGH = 100  # integer inputs that index nothing known are drawn from [0, 100)

# ONNX element types -> numpy dtypes for the inputs a probe can feed.
_ONNX_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype(np.float32),
    2: np.dtype(np.uint8),
    3: np.dtype(np.int8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int32),
    7: np.dtype(np.int64),
    9: np.dtype(np.bool_),
    10: np.dtype(np.float16),
    11: np.dtype(np.float64),
}


@dataclass(frozen=True)
class InputSpec:
    """A declared model input; ``None`` in ``shape`` is a symbolic (free) dimension."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...]
    int_high: int | None = None  # exclusive upper bound for index inputs (embedding rows)

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name} ({self.dtype.name} [{dims}])"


def declared_inputs(model: Any) -> list[InputSpec]:
    """The graph inputs that are not initializers, with their types and shapes."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise BuildError(
                f"model input {value.name!r} has ONNX element type {tensor.elem_type}, which "
                "a probe set cannot hold; give a model with numeric or boolean inputs"
            )
        shape = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tensor.shape.dim
        )
        specs.append(InputSpec(value.name, dtype, shape, _index_bound(graph, value.name)))
    if not specs:
        raise BuildError("the model declares no inputs; nothing to probe it with")
    return specs


def _index_bound(graph: Any, name: str) -> int | None:
    """Rows of the table an integer input indexes (a ``Gather`` of an initializer)."""
    from onnx import numpy_helper

    tables = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[1] == name:
            table = tables.get(node.input[0])
            if table is not None:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                dims = list(table.dims) or list(numpy_helper.to_array(table).shape)
                return int(dims[axis])
    return None


def generate_inputs(
    specs: list[InputSpec], seed: int, batch: int = DEFAULT_BATCH
) -> tuple[dict[str, Array], str]:
    """Seeded inputs for ``specs`` and a sentence saying how they were made."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, Array] = {}
    parts = []
    for spec in specs:
        shape = tuple(
            (batch if i == 0 else DEFAULT_FREE_DIM) if d is None else d
            for i, d in enumerate(spec.shape)
        )
        kind = spec.dtype.kind
        if kind == "f":
            inputs[spec.name] = rng.random(shape).astype(spec.dtype)
            how = "uniform in [0, 1)"
        elif kind == "b":
            inputs[spec.name] = rng.random(shape) < 0.5
            how = "random booleans"
        else:
            high = spec.int_high or DEFAULT_INT_HIGH
            inputs[spec.name] = rng.integers(0, high, shape).astype(spec.dtype)
            how = f"integers in [0, {high})"
        parts.append(f"{spec.name} {spec.dtype.name} {list(shape)} {how}")
    return inputs, f"generated from the declared inputs (seed {seed}): " + "; ".join(parts)


def load_inputs(path: Path, specs: list[InputSpec]) -> dict[str, Array]:
    """The probe inputs in ``path``, checked against the model's inputs.

    Raises BuildError naming what does not match and what the model takes.
    """
    takes = ", ".join(s.describe() for s in specs)
    raw: dict[str, Array] = {}
    try:
        # Open the file here: np.load leaks its own handle when the archive is corrupt.
        with path.open("rb") as f:
            archive = np.load(f, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise BuildError(f"probe {path} holds a single array, not an .npz archive")
            with archive:
                for key in archive.files:
                    if key.startswith(REFERENCE_PREFIX):
                        continue  # references are recomputed from the original model
                    raw[key.removeprefix(INPUT_PREFIX)] = archive[key]
    except FileNotFoundError:
        raise BuildError(f"probe file {path} does not exist") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise BuildError(f"probe {path} is not a readable .npz archive: {e}") from e
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        raise BuildError(
            f"probe {path} has arrays {unknown} the model does not take; it takes {takes}"
        )
    missing = sorted(set(by_name) - set(raw))
    if missing:
        raise BuildError(f"probe {path} lacks input(s) {missing}; the model takes {takes}")
    inputs = {name: _checked(path, by_name[name], array) for name, array in raw.items()}
    sizes = {name: int(a.shape[0]) for name, a in inputs.items()}
    if len(set(sizes.values())) != 1:
        raise BuildError(f"probe {path}: inputs disagree on the batch size (axis 0): {sizes}")
    return inputs


def _checked(path: Path, spec: InputSpec, array: Array) -> Array:
    where = f"probe {path}: input {spec.name!r}"
    if array.ndim != len(spec.shape) or any(
        want is not None and want != got for want, got in zip(spec.shape, array.shape, strict=True)
    ):
        raise BuildError(f"{where} has shape {list(array.shape)}, expected {spec.describe()}")
    if array.ndim == 0 or array.shape[0] == 0:
        raise BuildError(f"{where} holds no examples")
    kinds = {"f": "biuf", "i": "biu", "u": "bu", "b": "b"}[spec.dtype.kind]
    if array.dtype.kind not in kinds:
        raise BuildError(f"{where} holds {array.dtype.name}, expected {spec.dtype.name}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BuildError(f"{where} contains NaN or Inf")
    return array.astype(spec.dtype, copy=False)
