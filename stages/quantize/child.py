"""Child process of ``quantize.litert``: one precision, one ai-edge-quantizer run.

``python -m stages.quantize.child <job.json>`` with job keys ``float_model``,
``precision``, ``output``, ``calibration`` (an .npz keyed by the file's signature input
keys, ``[N, *input shape]``, already in the file's layout and dtypes; only int8 needs
it), ``int8_io`` (int8 only), ``signature_key``, ``threads``, ``report``. It writes the
quantized file and a JSON report (the recipe, how many samples were calibrated). It is
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
- ``int8`` with the job key ``int8_io`` (the spec's ``int8_io``): the recipe alone. Its
  INPUT/OUTPUT entries quantize the graph's float boundary tensors in place (the
  ``QUANTIZE_TENSOR`` transformation), so the file takes and returns int8 tensors with
  their calibrated scale and zero point, and has no leading QUANTIZE or trailing
  DEQUANTIZE. Boundary tensors that are not float (token ids) are left as they are.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

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


def build_quantizer(precision: str, float_model: Path, int8_io: bool = False) -> Any:
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
        if int8_io:
            return q  # the recipe's own INPUT/OUTPUT entries make the boundary int8
        # The latest matching entry wins: keep the model's boundary in float32.
        for boundary in (ops.INPUT, ops.OUTPUT):
            q.update_quantization_recipe(
                regex=".*", operation_name=boundary, algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE
            )
    else:
        raise ValueError(f"no recipe for precision {precision!r}")
    return q


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    precision = job["precision"]
    started = time.monotonic()
    int8_io = precision == "int8" and bool(job["int8_io"])
    q = build_quantizer(precision, Path(job["float_model"]), int8_io)
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
    Path(job["output"]).write_bytes(bytes(result.quantized_model))
    name, summary = RECIPE_SUMMARIES["int8_io" if int8_io else precision]
    report = {
        "recipe": {"name": name, "summary": summary, "entries": q.get_quantization_recipe()},
        "calibrated_samples": calibrated,
        "seconds": round(time.monotonic() - started, 3),
    }
    Path(job["report"]).write_text(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
