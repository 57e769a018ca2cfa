"""Two operators the legacy (TorchScript-based) ONNX exporter of torch 2.14 gets wrong.

transformers 5 builds causal masks with ``torch.diff`` and a ``cumsum`` of a boolean
tensor (packed-sequence detection, which stays in the graph under tracing). The
legacy exporter has no ``aten::diff`` and emits ``CumSum`` on ``bool``, which ONNX
does not allow, so every causal LM (GPT-2...) fails there and only the dynamo
exporter remains, at opset 18, which onnx-tf cannot read. Both are plain ONNX ops:

- ``diff(x, n, dim, prepend, append)``: concatenate, then ``n`` times
  ``Slice(1:) - Slice(:-1)`` along ``dim``;
- ``cumsum(x, dim, dtype)``: cast as PyTorch does (to ``dtype``, else integers and
  booleans to int64) before ``CumSum``.

Registered once per process, through the exporter's public extension point, for
opset 11 and newer (negative axes).
"""

from __future__ import annotations

from typing import Any

FIRST_OPSET = 11
BIG = 2**62
# torch ScalarType codes -> onnx TensorProto element types
ONNX_TYPES = {0: 2, 1: 3, 2: 5, 3: 6, 4: 7, 5: 10, 6: 1, 7: 11, 11: 9, 15: 16}
PROMOTED_TO_INT64 = ("Bool", "Byte", "Char", "Short", "Int")
INT64 = 7

_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    import torch

    torch.onnx.register_custom_op_symbolic("aten::diff", _diff, FIRST_OPSET)
    torch.onnx.register_custom_op_symbolic("aten::cumsum", _cumsum, FIRST_OPSET)
    _registered = True


def _constant(value: Any) -> int | None:
    node = value.node()
    if node.mustBeNone():
        return None
    for kind in ("t", "i"):
        try:
            return int(getattr(node, kind)("value"))
        except (RuntimeError, TypeError):
            continue
    raise RuntimeError(f"expected a constant, got {node.kind()}")


def _ints(g: Any, values: list[int]) -> Any:
    import torch

    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _diff(g: Any, x: Any, n: Any, dim: Any, prepend: Any, append: Any) -> Any:
    times, axis = _constant(n), _constant(dim)
    if times is None or axis is None:
        raise RuntimeError("diff needs a constant n and dim")
    parts = [v for v in (prepend, x, append) if not v.node().mustBeNone()]
    y = g.op("Concat", *parts, axis_i=axis) if len(parts) > 1 else x
    for _ in range(times):
        after = g.op("Slice", y, _ints(g, [1]), _ints(g, [BIG]), _ints(g, [axis]))
        before = g.op("Slice", y, _ints(g, [0]), _ints(g, [-1]), _ints(g, [axis]))
        y = g.op("Sub", after, before)
    return y


def _cumsum(g: Any, x: Any, dim: Any, dtype: Any = None) -> Any:
    import torch

    axis = _constant(dim)
    wanted = _constant(dtype) if dtype is not None else None
    if wanted is not None:
        x = g.op("Cast", x, to_i=ONNX_TYPES[wanted])
    elif x.type().scalarType() in PROMOTED_TO_INT64:
        x = g.op("Cast", x, to_i=INT64)
    return g.op("CumSum", x, g.op("Constant", value_t=torch.tensor(axis, dtype=torch.int64)))
