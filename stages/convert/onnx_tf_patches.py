"""Opset-13 Squeeze/Unsqueeze for onnx-tf 1.10 (onnx-tf env only).

onnx-tf 1.10 as published has Squeeze and Unsqueeze handlers for opsets 1 and 11
only, so every model exported at opset 13-15 that uses them (every attention model:
scaled_dot_product_attention needs opset 14) fails with "Unsqueeze version 13 is not
implemented". Opset 13 moved ``axes`` from an attribute to an input; exporters feed
it a constant, so the handlers below read it statically and otherwise behave like
the opset-11 ones. They are attached to the handler classes in this process only
(a stage process), never to the installed package.
"""

from __future__ import annotations

from typing import Any

PATCHED = ("Squeeze-13", "Unsqueeze-13")


def install() -> list[str]:
    """Add the missing handler versions; returns what was added (for the report)."""
    from onnx_tf.handlers.backend.squeeze import Squeeze
    from onnx_tf.handlers.backend.unsqueeze import Unsqueeze

    added = []
    if not hasattr(Squeeze, "version_13"):
        Squeeze.version_13 = classmethod(_squeeze_13)
        added.append("Squeeze-13")
    if not hasattr(Unsqueeze, "version_13"):
        Unsqueeze.version_13 = classmethod(_unsqueeze_13)
        added.append("Unsqueeze-13")
    return added


def _static_axes(node: Any, tensor_dict: dict[str, Any]) -> list[int] | None:
    import numpy as np
    import tensorflow as tf

    if len(node.inputs) < 2 or not node.inputs[1]:
        return None
    value = tf.get_static_value(tensor_dict[node.inputs[1]])
    if value is None:
        raise NotImplementedError(
            f"{node.op_type} {node.name!r}: axes computed at run time are not supported by "
            "this converter (they must be a constant)"
        )
    return [int(axis) for axis in np.ravel(value)]


def _squeeze_13(cls: Any, node: Any, **kwargs: Any) -> list[Any]:
    import tensorflow as tf

    tensor_dict = kwargs["tensor_dict"]
    x = tensor_dict[node.inputs[0]]
    axes = _static_axes(node, tensor_dict)
    return [tf.squeeze(x) if axes is None else tf.squeeze(x, axis=axes)]


def _unsqueeze_13(cls: Any, node: Any, **kwargs: Any) -> list[Any]:
    import tensorflow as tf

    tensor_dict = kwargs["tensor_dict"]
    x = tensor_dict[node.inputs[0]]
    axes = _static_axes(node, tensor_dict) or []
    # ONNX axes index the *output*, negative ones from its end; inserting in
    # ascending order keeps every earlier insertion at its final position.
    if x.shape.rank is None:
        if any(axis < 0 for axis in axes):
            raise NotImplementedError(f"Unsqueeze {node.name!r}: negative axes need a known rank")
        rank = max(axes, default=0) + 1
    else:
        rank = x.shape.rank + len(axes)
    for axis in sorted(axis % rank for axis in axes):
        x = tf.expand_dims(x, axis)
    return [x]
