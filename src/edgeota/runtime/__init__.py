"""The on-device inference service.

- ``probe``: probe sets (the health-check inputs and reference outputs a release ships) and
  the pure comparison of a model's outputs against them; needs only numpy.
- ``model``: a slot's model loaded into onnxruntime, with input validation.
- ``server``: the local HTTP inference API (``python -m edgeota.runtime.server``).

Nothing is imported here, so ``edgeota.runtime.probe`` stays importable without onnxruntime.
"""
