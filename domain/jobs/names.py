"""Stage names: the one place that spells them (the plan, the worker and the report use these).

A TFLite candidate (a converter toolchain such as ``onnx-tf``) has three stages named
after its slug: ``convert_onnx_tf``, ``validate_onnx_tf`` and ``validate_flex_onnx_tf``.
"""

from __future__ import annotations

EXPORT = "export_onnx"
QUANTIZE = "quantize"
REPORT = "report"
FLEX_PREFIX = "validate_flex_"


def slug(converter: str) -> str:
    """``onnx-tf`` -> ``onnx_tf``: a converter's name as it appears in stage names."""
    return converter.replace("-", "_")


def convert(converter: str) -> str:
    """The stage converting to .tflite (and, for onnx-tf, the SavedModel) with ``converter``."""
    return f"convert_{slug(converter)}"


def validate(converter: str) -> str:
    """The stage validating ``converter``'s float32 .tflite in stock LiteRT."""
    return f"validate_{slug(converter)}"


def validate_flex(converter: str) -> str:
    """The stage validating ``converter``'s .tflite in TensorFlow's interpreter (flex ops)."""
    return f"{FLEX_PREFIX}{slug(converter)}"


def is_validate_flex(stage: str) -> bool:
    return stage.startswith(FLEX_PREFIX)
