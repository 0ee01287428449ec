"""The on-device inference service.

- ``probe``: probe sets (the health-check inputs and reference outputs a release ships) and
  the pure comparison of a model's outputs against them; needs only numpy.
- ``slotmodel``: a slot's model file, checked, and the backend that serves its format.
- ``model``: a slot's ONNX model loaded into onnxruntime, with input validation.
- ``llm``: a slot's GGUF LLM loaded into llama.cpp (the optional ``llm`` extra).
- ``server``: the local HTTP inference API (``python -m edgeota.runtime.server``).

Nothing is imported here, so ``edgeota.runtime.probe`` stays importable without onnxruntime,
and neither backend is loaded before a slot's model needs it.
"""
