"""Child process of ``quantize.litert``: one precision, one ai-edge-quantizer run.

``python -m stages.quantize.child <job.json>`` with job keys ``float_model``,
``precision``, ``output``, ``calibration`` (an .npz keyed by the file's signature input
keys, ``[N, *input shape]``, already in the file's layout and dtypes; only int8 needs
it), ``int8_io`` (int8 only), ``signature_key``, ``threads``, ``report``. It writes the
quantized file and a JSON report (the recipe, how many samples were calibrated, the graph
outputs ``stages.quantize.swapped_outputs`` put back in float). It is
a child because calibration runs the float model in the LiteRT interpreter and the
quantizer edits flatbuffers in native code: a crash there costs one precision, not the
stage.

Recipes, as ai-edge-quantizer 0.10.0 defines them (``ai_edge_quantizer.recipe``,
``algorithms/nonlinear_quantize/float_casting.py``):

- ``dynamic_range``: ``recipe.dynamic_wi8_afp32()`` - int8 weights (symmetric, per
  channel); activations stay float32 and the kernels quantize them on the fly
  (``compute_precision: INTEGER``, no explicit dequantize) - TFLite's classic dynamic
  range quantization.
- ``float16``: the ``float_casting`` algorithm on every op that supports it
  (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, CONV_2D_TRANSPOSE, EMBEDDING_LOOKUP):
  weights stored as float16 with a DEQUANTIZE op in front; compute stays float32.
- ``int8``: ``recipe.static_wi8_ai8()`` - int8 weights (symmetric, per channel) and
  int8 activations (asymmetric, per tensor) from min/max calibration; the virtual
  INPUT/OUTPUT ops get ``no_quantize``, so the file keeps float32 inputs and outputs
  with a QUANTIZE/DEQUANTIZE at the boundary. Ops the quantizer cannot quantize stay
  float.
- ``int8`` with the job key ``recipe: "float_sensitive"``: the same, plus ``no_quantize``
  for the numerically sensitive ops (``SENSITIVE_OPS``: softmax, GELU, division, the
  pieces of a decomposed layer norm - RSQRT, SQRT, SQUARED_DIFFERENCE - and PADV2, whose
  padding-value tensor ai-edge-quantizer 0.10 quantizes with the rank of the padded
  tensor: "Ranks of scales (5) and zps (5) must be the same as the tensor rank (1)" on
  onnx2tf's files of a padded max-pool) and for the last layer: the ops that write the
  graph's outputs, followed back through ops that only move or join values (reshape,
  transpose, concatenation, ...) to the ops that compute them. A head that concatenates
  differently scaled values then keeps them in float.
- ``int8`` with the job key ``int8_io`` (the spec's ``int8_io``): the recipe alone. Its
  INPUT/OUTPUT entries quantize the graph's float boundary tensors in place (the
  ``QUANTIZE_TENSOR`` transformation), so the file takes and returns int8 tensors with
  their calibrated scale and zero point, and has no leading QUANTIZE or trailing
  DEQUANTIZE. Boundary tensors that are not float (token ids) are left as they are.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from stages.quantize.swapped_outputs import restore_outputs

RECIPE_SUMMARIES = {
    "dynamic_range": (
        "dynamic_wi8_afp32",
        "int8 weights (symmetric, per channel); float32 activations, quantized on the fly by the kernels",
    ),
    "float16": (
        "float_casting fp16 weights",
        "float16 weights (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, CONV_2D_TRANSPOSE, "
        "EMBEDDING_LOOKUP) dequantized to float32 in the graph; float32 compute",
    ),
    "int8": (
        "static_wi8_ai8, float32 I/O",
        "int8 weights (symmetric, per channel) and int8 activations (asymmetric, per tensor, "
        "min/max calibration); float32 inputs/outputs with QUANTIZE/DEQUANTIZE at the boundary",
    ),
    "int8_io": (
        "static_wi8_ai8, int8 I/O",
        "int8 weights (symmetric, per channel) and int8 activations (asymmetric, per tensor, "
        "min/max calibration); float inputs/outputs are int8 too, with their own scale and zero point",
    ),
}


SENSITIVE_OPS = ("SOFTMAX", "GELU", "DIV", "RSQRT", "SQRT", "SQUARED_DIFFERENCE", "PADV2")
PASS_THROUGH = frozenset(
    {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "PACK", "SLICE", "STRIDED_SLICE"}
)
FLOAT32 = 0  # TensorType.FLOAT32 in the TFLite schema


def last_layer_scopes(float_model: Path) -> list[str]:
    """The op scopes (ai-edge-quantizer's: output tensor names joined by ';') of the ops that
    write subgraph 0's outputs, followed back through ``PASS_THROUGH`` ops to the first
    computing op on each path (inclusive)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    model = tfl.read_model(float_model)
    graph = model.subgraphs[0]
    producer = {out: op for op in graph.operators for out in op.outputs}
    scopes: list[str] = []
    pending, seen = list(graph.outputs), set()
    while pending:
        tensor = pending.pop()
        op = producer.get(tensor)
        if op is None or id(op) in seen:
            continue
        seen.add(id(op))
        scopes.append(tfl.get_op_scope(op, graph.tensors))
        if tfl.TFL_OP_CODE_TO_NAME[model.operatorCodes[op.opcodeIndex].builtinCode] in PASS_THROUGH:
            pending.extend(i for i in op.inputs if i >= 0)
    return scopes


def float_ops(model_bytes: bytes) -> dict[str, int]:
    """Per op name, how many ops of the quantized file still write a float32 tensor
    (QUANTIZE and DEQUANTIZE at the boundary not counted)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if key.isupper()}
    model = tfl.read_model(bytearray(model_bytes))
    counts: dict[str, int] = {}
    for graph in model.subgraphs[:1]:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            name = names.get(builtin, f"BUILTIN_{builtin}")
            if name in ("QUANTIZE", "DEQUANTIZE"):
                continue
            if any(graph.tensors[i].type == FLOAT32 for i in op.outputs if i >= 0):
                counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


SENSITIVE_SUMMARY = (
    "softmax, GELU, division, RSQRT/SQRT/SQUARED_DIFFERENCE (layer norm), PADV2 and the last layer stay float32"
)


def build_quantizer(precision: str, float_model: Path, int8_io: bool = False, variant: str = "") -> Any:
    """The quantizer with its recipe; ``variant`` ``float_sensitive`` is int8's second recipe."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    q = quantizer.Quantizer(str(float_model))
    ops = qtyping.TFLOperationName
    if precision == "dynamic_range":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    elif precision == "float16":
        q.update_quantization_recipe(
            regex=".*",
            operation_name=ops.ALL_SUPPORTED,
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT,
                explicit_dequantize=True,
            ),
            algorithm_key=quantizer.AlgorithmName.FLOAT_CASTING,
        )
    elif precision == "int8":
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        # The latest matching entry wins: keep the model's boundary in float32.
        for boundary in () if int8_io else (ops.INPUT, ops.OUTPUT):
            q.update_quantization_recipe(
                regex=".*", operation_name=boundary, algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE
            )
        if variant == "float_sensitive":
            for name in SENSITIVE_OPS:
                q.update_quantization_recipe(
                    regex=".*", operation_name=ops[name], algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE
                )
            for scope in last_layer_scopes(float_model):
                q.update_quantization_recipe(
                    regex="^" + re.escape(scope) + "$",
                    operation_name=ops.ALL_SUPPORTED,
                    algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE,
                )
    else:
        raise ValueError(f"no recipe for precision {precision!r}")
    return q


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    precision = job["precision"]
    started = time.monotonic()
    int8_io = precision == "int8" and bool(job["int8_io"])
    variant = str(job["recipe"] or "")
    q = build_quantizer(precision, Path(job["float_model"]), int8_io, variant)
    calibrated = 0
    calibration_result = None
    if q.need_calibration:
        if not job["calibration"]:
            raise ValueError(f"the {precision} recipe needs calibration data and none was given")
        with np.load(job["calibration"], allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        count = next(iter(arrays.values())).shape[0]
        dataset = [{key: array[index] for key, array in arrays.items()} for index in range(count)]
        calibration_result = q.calibrate({job["signature_key"]: dataset}, num_threads=max(1, int(job["threads"])))
        calibrated = count
    result = q.quantize(calibration_result)
    model = bytearray(result.quantized_model)
    # ai-edge-quantizer can swap a float graph output for its int8 copy (swapped_outputs says when).
    restored = restore_outputs(model)
    model_bytes = bytes(model)
    Path(job["output"]).write_bytes(model_bytes)
    name, summary = RECIPE_SUMMARIES["int8_io" if int8_io else precision]
    if variant == "float_sensitive":
        name, summary = f"{name}, sensitive ops float", summary + "; " + SENSITIVE_SUMMARY
    report = {
        "recipe": {
            "name": name,
            "variant": variant or "default",
            "summary": summary,
            "entries": q.get_quantization_recipe(),
        },
        "float_ops": float_ops(model_bytes),
        "restored_outputs": restored,
        "calibrated_samples": calibrated,
        "seconds": round(time.monotonic() - started, 3),
    }
    Path(job["report"]).write_text(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
