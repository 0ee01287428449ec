"""Model operations: building model releases, ONNX graph edits, and the example model.

Modules here may need the ``modelops`` extra (onnx, scikit-learn, skl2onnx); devices do not,
so nothing is imported at package level.
"""
