"""Operators newer than a target opset, rewritten as the older operators they are defined by.

``onnx.version_converter`` takes a file down one opset at a time through per-operator
adapters, and an operator introduced after the target has none: converting an opset-17
transformer to 15 (onnx-tf 1.10 reads up to 15) fails with "No Previous Version of
LayerNormalization exists" (onnx 1.23, ``version_converter/adapters/no_previous_version.h``),
and so does opset-20 ``Gelu``. (Opset-18 reductions whose ``axes`` became an input do
have an adapter, and need nothing here.) Before converting, ``decompose`` replaces each
such node by the subgraph the ONNX operator specification gives as its definition, built
with ``onnx.helper`` in the file's own opset, so the converter can then take every node
down. The caller checks the converted file against the reference in onnxruntime
(``stages.export.onnx_file.convert_opset``); a file that disagrees is not used.

- ``LayerNormalization`` (opset 17; ``axis``, ``epsilon``, ``stash_type``; outputs Y and
  the optional Mean and InvStdDev): ``ReduceMean -> Sub -> Mul (square) -> ReduceMean ->
  Add epsilon -> Sqrt -> Div -> Mul scale -> Add bias``, computed in float32 when the input
  is float16 or bfloat16 (``stash_type`` 1) and cast back.
- ``Gelu`` (opset 20; ``approximate`` "none" or "tanh"): ``0.5 * x * (1 + erf(x / sqrt 2))``
  or ``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))``.

Only nodes of the main graph (not inside If/Loop bodies) are rewritten; a LayerNormalization
with a non-negative ``axis`` needs its input's rank from shape inference, and is left as it
is (the converter then names it) when the rank is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# operator -> the opset that introduced it (no earlier version to convert to)
INTRODUCED = {"LayerNormalization": 17, "Gelu": 20}
DEFAULT_DOMAINS = ("", "ai.onnx")
LOW_PRECISION = (10, 16)  # TensorProto.FLOAT16, TensorProto.BFLOAT16


def decompose(model: Any, target_opset: int) -> list[str]:
    """Rewrite, in place, the main graph's nodes that ``target_opset`` does not have.

    ``model`` is an ``onnx.ModelProto`` in its own (higher) opset; the new nodes use that
    opset too. Returns the operator types rewritten, sorted, each once (empty if none).
    """
    opset = next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)
    wanted = {op for op, since in INTRODUCED.items() if target_opset < since <= opset}
    graph = model.graph
    if not any(n.op_type in wanted and n.domain in DEFAULT_DOMAINS for n in graph.node):
        return []
    builder = _Builder(graph, opset, _value_types(model))
    rewriters: dict[str, Callable[[Any], list[Any] | None]] = {
        "LayerNormalization": builder.layer_norm,
        "Gelu": builder.gelu,
    }
    done: set[str] = set()
    nodes = []
    for node in graph.node:
        replaced = rewriters[node.op_type](node) if node.op_type in wanted and node.domain in DEFAULT_DOMAINS else None
        if replaced is None:
            nodes.append(node)
        else:
            nodes.extend(replaced)
            done.add(node.op_type)
    del graph.node[:]
    graph.node.extend(nodes)
    return sorted(done)


def _value_types(model: Any) -> dict[str, tuple[int, int | None]]:
    """name -> (element type, rank or None) for every value shape inference can type."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is a help here, not a requirement
        inferred = model
    graph = inferred.graph
    types: dict[str, tuple[int, int | None]] = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
        types[info.name] = (tensor.elem_type, rank)
    for init in graph.initializer:
        types[init.name] = (init.data_type, len(init.dims))
    return types


class _Builder:
    """Makes the replacement nodes, with names that do not clash with the graph's."""

    def __init__(self, graph: Any, opset: int, types: dict[str, tuple[int, int | None]]) -> None:
        self.graph, self.opset, self.types = graph, opset, types
        self.taken = {name for n in graph.node for name in (*n.input, *n.output, n.name)}
        self.taken |= {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
        self.counter = 0

    def _name(self, base: str) -> str:
        while True:
            self.counter += 1
            name = f"{base}__dec{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def _const(self, base: str, value: float, elem_type: int) -> tuple[Any, str]:
        from onnx import helper

        name = self._name(f"{base}/const")
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, elem_type, [], [value])), name

    def layer_norm(self, node: Any) -> list[Any] | None:
        from onnx import TensorProto, helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis, epsilon = int(attrs.get("axis", -1)), float(attrs.get("epsilon", 1e-5))
        x = node.input[0]
        elem, rank = self.types.get(x, (TensorProto.FLOAT, None))
        if axis < 0:
            axes = list(range(axis, 0))
        elif rank is not None:
            axes = list(range(axis - rank, 0))
        else:
            return None  # a positive axis of an input of unknown rank
        base = node.name or "LayerNormalization"
        nodes: list[Any] = []
        stash = elem in LOW_PRECISION and int(attrs.get("stash_type", 1)) == 1
        compute = TensorProto.FLOAT if stash or elem == 0 else elem

        def add(op: str, inputs: list[str], output: str | None = None, **kwargs: Any) -> str:
            out = output or self._name(f"{base}/{op}")
            nodes.append(helper.make_node(op, inputs, [out], name=self._name(f"{base}/{op}_node"), **kwargs))
            return out

        if stash:
            x = add("Cast", [x], to=TensorProto.FLOAT)
        outputs = list(node.output)
        mean_output = outputs[1] if len(outputs) > 1 and outputs[1] and not stash else None
        mean = self._reduce_mean(add, nodes, base, x, axes, mean_output)
        diff = add("Sub", [x, mean])
        var = self._reduce_mean(add, nodes, base, add("Mul", [diff, diff]), axes)
        eps_node, eps = self._const(base, epsilon, compute)
        nodes.append(eps_node)
        std = add("Sqrt", [add("Add", [var, eps])])
        normalized = add("Div", [diff, std])
        if stash:
            normalized = add("Cast", [normalized], to=elem)
        scaled = add("Mul", [normalized, node.input[1]], None if len(node.input) > 2 and node.input[2] else outputs[0])
        if len(node.input) > 2 and node.input[2]:
            add("Add", [scaled, node.input[2]], outputs[0])
        if len(outputs) > 1 and outputs[1] and mean_output is None:
            add("Cast", [mean], outputs[1], to=elem)
        if len(outputs) > 2 and outputs[2]:
            add("Reciprocal", [std], outputs[2])
        return nodes

    def _reduce_mean(
        self, add: Callable[..., str], nodes: list[Any], base: str, x: str, axes: list[int], output: str | None = None
    ) -> str:
        from onnx import TensorProto, helper

        if self.opset < 18:
            return add("ReduceMean", [x], output, axes=axes, keepdims=1)
        name = self._name(f"{base}/axes")
        axes_tensor = helper.make_tensor(name, TensorProto.INT64, [len(axes)], axes)
        nodes.append(helper.make_node("Constant", [], [name], value=axes_tensor))
        return add("ReduceMean", [x, name], output, keepdims=1)

    def gelu(self, node: Any) -> list[Any] | None:
        from onnx import TensorProto, helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        approximate = attrs.get("approximate", b"none")
        approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
        x = node.input[0]
        elem = self.types.get(x, (TensorProto.FLOAT, None))[0] or TensorProto.FLOAT
        base = node.name or "Gelu"
        nodes: list[Any] = []

        def add(op: str, inputs: list[str], output: str | None = None) -> str:
            out = output or self._name(f"{base}/{op}")
            nodes.append(helper.make_node(op, inputs, [out], name=self._name(f"{base}/{op}_node")))
            return out

        def const(value: float) -> str:
            made, name = self._const(base, value, elem)
            nodes.append(made)
            return name

        if approximate == "tanh":
            cube = add("Mul", [add("Mul", [x, x]), x])
            inner = add("Add", [x, add("Mul", [cube, const(0.044715)])])
            core = add("Tanh", [add("Mul", [inner, const(math.sqrt(2.0 / math.pi))])])
        elif approximate == "none":
            core = add("Erf", [add("Div", [x, const(math.sqrt(2.0))])])
        else:
            return None
        half_x = add("Mul", [x, const(0.5)])
        add("Mul", [half_x, add("Add", [core, const(1.0)])], node.output[0])
        return nodes
