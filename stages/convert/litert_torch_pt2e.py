"""int8 with litert-torch's PT2E flow, from the PyTorch module (``convert.litert_torch``, torch env).

The other int8 quantizer of the service: ai-edge-quantizer edits a float32 .tflite
(``stages.quantize``); this one quantizes the PyTorch graph before it is lowered, as
litert-torch 0.10.0 documents it (``litert_torch.quantize``, its test
``test_convert_resnet18_pt2e_per_channel``):

1. ``torch.export.export(wrapper, (), kwargs=first sample).module()``: the ATen graph;
2. ``prepare_pt2e(graph, PT2EQuantizer().set_global(get_symmetric_quantization_config(
   is_per_channel=True)))``: observers for int8 weights (symmetric, per output channel,
   min/max) and int8 activations (affine, per tensor, histogram observer), on the patterns
   litert-torch's quantizer annotates (conv2d+relu, linear, add, max_pool2d,
   adaptive_avg_pool2d and what shares their ranges); other ops stay float;
3. the graph run on every calibration sample (the same arrays as ai-edge-quantizer's:
   ``stages.quantize.calibration.calibration_arrays``);
4. ``convert_pt2e(graph, fold_quantize=False)``: quantize/dequantize pairs in the graph;
5. ``litert_torch.convert(graph, sample_kwargs=..., quant_config=QuantConfig(pt2e_quantizer=
   quantizer))``: the converter's ``qdq_conversion_mode: STATIC`` folds each pair into int8
   kernels. Its inputs and outputs come out int8 as well (the observed input and output
   ranges); unless the spec's ``int8_io``, they are made float32 again, with a QUANTIZE after
   each input and a DEQUANTIZE before each output at the same scale and zero point
   (``stages.kit.tflite_boundary.rewrite(float_ports=True)``), as ai-edge-quantizer's files.

A failure here is never the stage's: ``quantize`` returns ``{"error": ...}`` and
``quantize.litert`` lists the attempt as failed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from stages.kit.failures import first_line

TARGET = "model_int8_pt2e.tflite"
OUTPUT = "tflite_int8_pt2e"
QUANTIZER = "litert-torch-pt2e"
RECIPE = {
    "name": "pt2e symmetric per-channel, static",
    "variant": "pt2e",
    "summary": "PT2EQuantizer with get_symmetric_quantization_config(is_per_channel=True): int8 weights "
    "(symmetric, per channel) and int8 activations (affine, per tensor, histogram calibration) on "
    "conv2d, linear, add, max_pool2d and adaptive_avg_pool2d patterns; float32 inputs/outputs "
    "quantized inside the graph (int8 ones with int8_io)",
}


def quantize(
    litert_torch: Any,
    wrapper: Any,
    example: dict[str, Any],
    calibration: dict[str, np.ndarray],
    target: Path,
    flags: dict[str, Any],
) -> dict[str, Any]:
    """Write the PT2E int8 file to ``target``; ``{"recipe", "calibrated_samples", "seconds"}``,
    or ``{"error": first line}`` (nothing written).

    ``example``: the keyword inputs the float32 conversion used (torch tensors, one sample);
    ``calibration``: per keyword, ``[N, *input shape]`` arrays in PyTorch's layout and dtype;
    ``flags``: litert-torch's converter flags (``quant_config`` is replaced).
    """
    import torch

    started = time.monotonic()
    try:
        from litert_torch.quantize import pt2e_quantizer, quant_config
        from torchao.quantization.pt2e import quantize_pt2e

        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
        )
        graph = torch.export.export(wrapper, (), kwargs=example, strict=False).module()
        prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
        count = int(next(iter(calibration.values())).shape[0])
        with torch.no_grad():
            for index in range(count):
                prepared(**{key: torch.from_numpy(np.ascontiguousarray(a[index])) for key, a in calibration.items()})
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        config = quant_config.QuantConfig(pt2e_quantizer=quantizer)
        edge_model = litert_torch.convert(converted, sample_kwargs=example, **{**flags, "quant_config": config})
        edge_model.export(str(target))
    except Exception as exc:  # torch.export, the observers and the MLIR lowering raise anything
        import traceback

        traceback.print_exc()
        target.unlink(missing_ok=True)
        return {"error": f"litert-torch's PT2E flow failed: {first_line(exc)}"[:500]}
    return {"recipe": dict(RECIPE), "calibrated_samples": count, "seconds": round(time.monotonic() - started, 3)}


def produce(
    request: Any,
    litert_torch: Any,
    wrapper: Any,
    example: dict[str, Any],
    keys: dict[str, str],
    samples: dict[str, np.ndarray],
    renames: dict[str, str],
    flags: dict[str, Any],
) -> tuple[dict[str, str], dict[str, Any]]:
    """({``tflite_int8_pt2e``: file name} or {}, the stage info's ``pt2e`` entry) for a job that
    asks for int8; calibrated on the job's calibration data (``calibration_arrays``: the upload,
    else the validation samples), at most ``options.calibration_limit`` samples.

    ``keys``: spec input name -> the wrapper's keyword; ``renames``: keyword -> spec name for
    the inputs whose names are not identifiers (renamed in the file as in the float32 one).
    The boundary is float32 unless the spec asks for ``int8_io``.
    """
    from stages.kit.contract import StageError
    from stages.kit.tflite_ops import operators
    from stages.quantize.calibration import DEFAULT_LIMIT, calibration_arrays

    limit = int(request.options.get("calibration_limit") or DEFAULT_LIMIT)
    try:
        arrays, calibrated = calibration_arrays(request.spec, request.optional_input("calibration"), samples, limit)
    except StageError as exc:  # quantize.litert reports the same file's problem as int8's
        return {}, {"quantizer": QUANTIZER, "error": exc.message}
    target = request.output_dir / TARGET
    produced = quantize(litert_torch, wrapper, example, {keys[n]: a for n, a in arrays.items()}, target, flags)
    info: dict[str, Any] = {"quantizer": QUANTIZER, "calibration": calibrated, **produced}
    if "error" in produced:
        return {}, info
    try:
        from stages.kit.tflite_boundary import rewrite

        # PT2E quantizes the boundary too: float32 ports (QUANTIZE/DEQUANTIZE inside) unless int8_io.
        staged = target.with_suffix(".boundary.tflite")
        rewrite(target, staged, renames=renames, float_ports=not request.spec.int8_io)
        staged.replace(target)
        custom = operators(target)["custom"]
    except Exception as exc:  # a file over 2 GB, a flatbuffer the readers refuse
        custom, info["error"] = [], f"the PT2E file cannot be finished: {first_line(exc)}"
    if custom:
        info["error"] = f"the PT2E file has custom ops {custom}, which stock LiteRT cannot run"
    if "error" in info:
        target.unlink(missing_ok=True)
        return {}, info
    return {OUTPUT: TARGET}, info
