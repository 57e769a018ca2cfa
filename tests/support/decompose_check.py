"""Decomposed operators against onnxruntime, executed by the torch environment's Python.

    decompose_check.py

Builds one-node graphs (LayerNormalization at opsets 17 and 18, with and without bias, a
positive axis with the Mean and InvStdDev outputs, float16 input; Gelu at opset 20 in both
approximations), runs each in onnxruntime, rewrites it with
``stages.export.onnx_decompose.decompose``, converts it to opset 15 with
``onnx.version_converter`` and runs it again on the same random inputs. Prints one JSON
line: case -> {"max_abs", "scale", "decomposed", "opset", "ops"} (``ops``: the converted
graph's operator types).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, version_converter

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for `stages`
from stages.export.onnx_decompose import decompose  # noqa: E402

TARGET = 15
SHAPE = [2, 5, 16]


def layer_norm(opset: int, axis: int, bias: bool, outputs: int = 1, dtype: int = TensorProto.FLOAT) -> Any:
    rng = np.random.default_rng(opset + axis + outputs)
    normalized = SHAPE[axis:]
    numpy_type = helper.tensor_dtype_to_np_dtype(dtype)
    scale = numpy_helper.from_array((rng.standard_normal(normalized) + 1).astype(numpy_type), "scale")
    inits = [scale]
    inputs = ["x", "scale"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(normalized).astype(numpy_type), "bias"))
        inputs.append("bias")
    names = ["y", "mean", "inv_std"][:outputs]
    node = helper.make_node("LayerNormalization", inputs, names, axis=axis, epsilon=1e-3)
    stat = TensorProto.FLOAT if dtype == TensorProto.FLOAT else dtype
    graph_outputs = [helper.make_tensor_value_info(names[0], dtype, SHAPE)]
    graph_outputs += [helper.make_tensor_value_info(n, stat, None) for n in names[1:]]
    graph = helper.make_graph([node], "ln", [helper.make_tensor_value_info("x", dtype, SHAPE)], graph_outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def gelu(approximate: str) -> Any:
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    graph = helper.make_graph(
        [node],
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)


def run(model: Any, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(out, dtype=np.float64) for out in session.run(None, {"x": x})]


def check(model: Any) -> dict[str, Any]:
    elem = model.graph.input[0].type.tensor_type.elem_type
    x = (np.random.default_rng(1).standard_normal(SHAPE) * 3 + 0.5).astype(helper.tensor_dtype_to_np_dtype(elem))
    expected = run(model, x)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    decomposed = decompose(rewritten, TARGET)
    converted = version_converter.convert_version(rewritten, TARGET)
    onnx.checker.check_model(converted, full_check=True)
    got = run(converted, x)
    return {
        "max_abs": max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)),
        "scale": max(float(np.abs(e).max()) for e in expected),
        "outputs": len(got),
        "decomposed": decomposed,
        "opset": converted.opset_import[0].version,
        "ops": sorted({n.op_type for n in converted.graph.node}),
    }


CASES = {
    "layer_norm_17": layer_norm(17, -1, bias=True),
    "layer_norm_17_two_axes_no_bias": layer_norm(17, -2, bias=False),
    "layer_norm_17_positive_axis_all_outputs": layer_norm(17, 2, bias=True, outputs=3),
    "layer_norm_18": layer_norm(18, -1, bias=True),
    "layer_norm_17_float16": layer_norm(17, -1, bias=True, dtype=TensorProto.FLOAT16),
    "gelu_20": gelu("none"),
    "gelu_20_tanh": gelu("tanh"),
}

if __name__ == "__main__":
    print(json.dumps({name: check(model) for name, model in CASES.items()}))
