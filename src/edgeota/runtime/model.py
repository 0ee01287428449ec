"""The model installed in a slot, loaded into onnxruntime.

``LoadedModel.load`` raises FormatError with what is wrong and what to do when a slot cannot
serve (no slot description, no model file, a file of the wrong size, a file onnxruntime
rejects), so a runtime that cannot start says why before it exits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeota.errors import FormatError
from edgeota.runtime.probe import Array
from edgeota.runtime.slotmodel import TensorSpec, slot_model_file
from edgeota.slotinfo import SlotInfo

__all__ = ["LoadedModel", "TensorSpec"]

# Which kinds of input values may be cast to a tensor of a given kind without losing meaning.
_ACCEPTED_KINDS = {"f": "biuf", "i": "biu", "u": "bu", "b": "b"}


class LoadedModel:
    """An onnxruntime session for the model file of one installed slot."""

    kind: str = "onnx"

    def __init__(
        self, slot: SlotInfo, model_path: Path, session: Any
    ) -> None:  # use LoadedModel.load
        self.slot = slot
        self.model_path = model_path
        self._session = session
        self.inputs = tuple(TensorSpec.from_ort(a) for a in session.get_inputs())
        self.outputs = tuple(TensorSpec.from_ort(a) for a in session.get_outputs())
        self._inputs_by_name = {spec.name: spec for spec in self.inputs}

    @classmethod
    def load(cls, slot_dir: Path) -> LoadedModel:
        slot, path = slot_model_file(slot_dir)
        if path.suffix == ".gguf":
            raise FormatError(
                f"model file {path} is a GGUF model, which onnxruntime cannot run; the runtime "
                "serves it through edgeota.runtime.slotmodel.load_slot_model (llama.cpp)"
            )
        if path.suffix != ".onnx":
            raise FormatError(f"model file {path} is not an .onnx file; this runtime runs ONNX")
        options = ort.SessionOptions()
        # One thread per inference: a device keeps cores for its other work, and concurrent
        # requests each get their own thread from the HTTP server.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings go through our own messages
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # onnxruntime's exceptions derive straight from Exception, so nothing narrower works.
        except Exception as e:
            raise FormatError(
                f"onnxruntime cannot load model file {path} of release {slot.release_id}: "
                f"{e}; the file is not a valid ONNX model for this runtime"
            ) from e
        return cls(slot, path, session)

    def validate(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """Turn request values (arrays or nested lists) into the arrays the model takes.

        Raises ValueError naming the input and what was expected.
        """
        unknown = sorted(set(inputs) - set(self._inputs_by_name))
        if unknown:
            takes = ", ".join(spec.describe() for spec in self.inputs)
            raise ValueError(f"unknown input(s) {unknown}; this model takes {takes}")
        missing = sorted(set(self._inputs_by_name) - set(inputs))
        if missing:
            raise ValueError(
                "missing input(s): "
                + ", ".join(self._inputs_by_name[name].describe() for name in missing)
            )
        return {name: self._convert(self._inputs_by_name[name], v) for name, v in inputs.items()}

    @staticmethod
    def _convert(spec: TensorSpec, value: Any) -> Array:
        if spec.dtype is None:
            raise ValueError(
                f"input {spec.name!r} has type {spec.type}, which this runtime cannot feed"
            )
        try:
            array = np.asarray(value)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"input {spec.name!r} is not a rectangular array: {e}") from e
        if array.dtype.kind not in _ACCEPTED_KINDS[spec.dtype.kind]:
            raise ValueError(
                f"input {spec.name!r} must hold {spec.dtype.name} values, "
                f"got {array.dtype.name if array.dtype.kind != 'O' else 'mixed values'}"
            )
        if array.ndim != len(spec.shape) or any(
            want is not None and want != got
            for want, got in zip(spec.shape, array.shape, strict=False)
        ):
            raise ValueError(
                f"input {spec.name!r} has shape {list(array.shape)}, expected {spec.describe()}"
            )
        return array.astype(spec.dtype, copy=False)

    def run(self, inputs: Mapping[str, Any]) -> dict[str, Array]:
        """Validate ``inputs`` and run the model; outputs are keyed by name."""
        feed = self.validate(inputs)
        names = [spec.name for spec in self.outputs]
        results = self._session.run(names, feed)
        return {name: np.asarray(result) for name, result in zip(names, results, strict=True)}
