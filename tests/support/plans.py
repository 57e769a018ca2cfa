"""Expected stage plans, written out (not derived from the planner they check)."""

from __future__ import annotations

# Every float32 candidate in auto's priority order, each converted, validated in stock
# LiteRT and, when it needs flex ops, in TensorFlow's interpreter.
EVERY_CANDIDATE = [
    "convert_onnx2tf",
    "validate_onnx2tf",
    "validate_flex_onnx2tf",
    "convert_litert_torch",
    "validate_litert_torch",
    "validate_flex_litert_torch",
    "convert_onnx_tf",
    "validate_onnx_tf",
    "validate_flex_onnx_tf",
]
