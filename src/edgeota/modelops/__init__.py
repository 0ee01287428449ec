"""Model operations: building model releases, ONNX graph edits, and the example model.

- ``bundle``: ``edgeota model build`` (variants per format in ``onnx_variants``,
  ``gguf_variants``, ``safetensors_variants``; measured in ``measure``/``measure_child``;
  scored in ``quality``; memory in ``memory``; described in ``manifest``, shown by ``report``);
- ``choice``: which variant a device gets (pure; the server calls it at check-in).

Modules here may need the ``modelops`` extra (onnx, scikit-learn, skl2onnx); devices do not,
so nothing is imported at package level.
"""
