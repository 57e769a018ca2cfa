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

The flow runs in a fork of the stage (``stages.kit.forked_cli.call_forked``), at most
``options.pt2e_timeout_seconds`` (default ``TIMEOUT``): a native abort in the MLIR lowering,
or a hang, is this attempt's ``{"error": ...}``, and the float32 conversion still runs. The
fork is made before the stage's first ``litert_torch.convert``: after it the process holds
16 more native threads (measured on mobilenet_v2: ``llvm-worker-*`` of MLIR and
``tf_XLAEigen`` of XLA, 2 -> 18 threads), whose pools and locks a fork inherits without
their threads (measured: a fork made then hangs in litert-torch's "Create MLIR Module" step
until killed); before it, only torch's OpenMP pool is running, and the fork sets
torch to one thread before any op (measured: with the parent at 2 threads, the fork's first
forward pass hangs in libgomp otherwise; with one thread it converts mobilenet_v2 as the
parent does).

The scale floor, and why it is not lowered (measured with litert-torch 0.10.0, torchvision's
mobilenet_v2 at 224 with its initial weights and identity batch norms, which is
``bench/precisions.py``'s ``cnn`` stand-in): litert-torch's config gives every activation
observer ``eps=2**-12``, so no activation scale is below 2^-12 and a tensor whose values stay
within half a step (|x| < 2^-13, about 1.2e-4) quantizes to its zero point. That network's
activations shrink about tenfold at each inverted residual without a skip (absmax 2.1 after
the stem, 3e-4 at block 7, 2.7e-8 at block 17): 55 of its 65 activation tensors are below the
floor's resolution and 33 wholly within half a step, so the quantized graph's outputs are
constant zeros - cosine 0.0 to PyTorch already in PyTorch (``convert_pt2e``'s graph), before
any lowering; the .tflite, with int8 or float32 ports, agrees. Depthwise convolutions, ReLU6
and the boundary rewrite are not at fault: with random batch-norm statistics
(``tests/support/torch_init.randomize_batch_norm``, activations of order 1) the same network
gives 0.99984 in PyTorch, in the .tflite and after the boundary rewrite, and alone (32
channels, 32x32) a depthwise convolution gives 0.99988, a depthwise conv + BN + ReLU6 0.99984
and an inverted residual 0.99999 at all three points. The same graph
calibrated with ``eps=2**-64`` gives 0.99955 (the .tflite 0.99955), but the floor is what
keeps int32 biases in range (bias scale = input scale x weight scale): on a biased
convolution fed by activations of 1e-4 it takes the .tflite from 0.99999 to 0.717 (the
biases saturate; the PyTorch graph, with float biases, cannot show it), as ONNX Runtime's
quantizer met (microsoft/onnxruntime#22020). The floor stays; when the quantized graph's
outputs come out constant on the calibration samples while the float model's do not, the
attempt fails here, before the lowering, with the count of activations below the floor as
its reason (pytorch/pytorch#90288 discusses the floor of PyTorch's own observers). ``info``
always has ``activations`` (how many are below the floor) and ``check`` (the quantized
graph against the float one on up to ``CHECK_SAMPLES`` calibration samples).

A failure here is never the stage's: ``produce`` returns ``{"error": ...}`` and
``quantize.litert`` lists the attempt as failed.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.kit.failures import first_line
from stages.kit.options import read_options
from stages.kit.results import PT2E, prebuilt_output

TARGET = "model_int8_pt2e.tflite"
OUTPUT = prebuilt_output(PT2E)
QUANTIZER = "litert-torch-pt2e"
RECIPE = {
    "name": "pt2e symmetric per-channel, static",
    "variant": PT2E,
    "summary": "PT2EQuantizer with get_symmetric_quantization_config(is_per_channel=True): int8 weights "
    "(symmetric, per channel) and int8 activations (affine, per tensor, histogram calibration) on "
    "conv2d, linear, add, max_pool2d and adaptive_avg_pool2d patterns; float32 inputs/outputs "
    "quantized inside the graph (int8 ones with int8_io)",
}
SCALE_FLOOR = 2**-12  # litert-torch 0.10's get_symmetric_quantization_config: every observer's eps
CHECK_SAMPLES = 4  # calibration samples the quantized graph is compared on, before the lowering
TIMEOUT = 900.0  # seconds; the stage's own limit is 30 minutes, the float32 conversion must fit too
RESULT = "pt2e_result.json"  # what the fork hands back (removed once read)
LOG = "pt2e.log"


@dataclass(frozen=True)
class Pt2eOptions:
    """``calibration_limit``: at most that many calibration samples (None: the default);
    ``pt2e_timeout_seconds``: the fork's time limit (None: ``TIMEOUT``)."""

    calibration_limit: int | None = None
    pt2e_timeout_seconds: float | None = None


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
                prepared(**_sample(calibration, index))
        activations = activation_ranges(prepared)
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        check = compare(converted, wrapper, calibration, min(count, CHECK_SAMPLES))
        if check["constant"]:
            target.unlink(missing_ok=True)
            return {"error": _constant_reason(check, activations), "activations": activations, "check": check}
        config = quant_config.QuantConfig(pt2e_quantizer=quantizer)
        edge_model = litert_torch.convert(converted, sample_kwargs=example, **{**flags, "quant_config": config})
        edge_model.export(str(target))
    except Exception as exc:  # torch.export, the observers and the MLIR lowering raise anything
        import traceback

        traceback.print_exc()
        target.unlink(missing_ok=True)
        return {"error": f"litert-torch's PT2E flow failed: {first_line(exc)}"[:500]}
    return {
        "recipe": dict(RECIPE),
        "calibrated_samples": count,
        "activations": activations,
        "check": check,
        "seconds": round(time.monotonic() - started, 3),
    }


def activation_ranges(prepared: Any) -> dict[str, Any]:
    """How the calibrated activation observers of ``prepared`` (``prepare_pt2e``'s graph after
    calibration) sit against their scale floor: ``{"observed", "below_floor", "constant",
    "floor_scale"}``. ``below_floor``: observers whose range (zero included) over the int8
    levels is under their ``eps``, so their scale is the floor and not the data's;
    ``constant``: observers whose values all stay within half a step of zero at that floor,
    so every value quantizes to the zero point. Weight observers (per channel) are not counted;
    an observer that saw nothing (infinite range) neither."""
    from torchao.quantization.pt2e.observer import HistogramObserver

    observed = below = constant = 0
    floor = SCALE_FLOOR
    for module in prepared.modules():
        if not isinstance(module, HistogramObserver):  # litert-torch's activation observer
            continue
        low, high = float(module.min_val), float(module.max_val)
        if not (np.isfinite(low) and np.isfinite(high)):
            continue
        floor = float(module.eps)
        observed += 1
        levels = int(module.quant_max) - int(module.quant_min)
        if (max(high, 0.0) - min(low, 0.0)) / levels < floor:
            below += 1
            constant += int(max(abs(low), abs(high)) < floor / 2)
    return {"observed": observed, "below_floor": below, "constant": constant, "floor_scale": floor}


def compare(converted: Any, wrapper: Any, calibration: dict[str, np.ndarray], count: int) -> dict[str, Any]:
    """``convert_pt2e``'s graph against the float ``wrapper`` on the first ``count`` calibration
    samples: ``{"samples", "min_cosine", "constant"}``; ``min_cosine`` over the samples, of all
    outputs flattened together (0.0 when either side is all zeros); ``constant``: every quantized
    output is one value on every sample while some float output varies."""
    import torch

    quantized: list[np.ndarray] = []
    reference: list[np.ndarray] = []
    with torch.no_grad():
        for index in range(count):
            inputs = _sample(calibration, index)
            quantized.append(_flat(converted(**inputs)))
            reference.append(_flat(wrapper(**inputs)))
    cosines = [_cosine(q, r) for q, r in zip(quantized, reference, strict=True)]
    flat_q, flat_r = np.concatenate(quantized), np.concatenate(reference)
    constant = bool(np.ptp(flat_q) == 0 and np.ptp(flat_r) > 0) if count else False
    return {"samples": count, "min_cosine": round(min(cosines), 6) if cosines else None, "constant": constant}


def _constant_reason(check: dict[str, Any], activations: dict[str, Any]) -> str:
    head = (
        f"litert-torch's PT2E int8 graph gives constant outputs (cosine {check['min_cosine']:.4f} to the "
        f"float model on {check['samples']} calibration samples, before the lowering)"
    )
    if not activations["below_floor"]:
        return head
    return (
        f"{head}: {activations['below_floor']} of {activations['observed']} activation tensors span fewer "
        f"than 255 steps of its minimum scale 2^-12 (litert-torch's get_symmetric_quantization_config, "
        f"observer eps) and {activations['constant']} stay within half a step of zero, so they quantize to a "
        f"constant; the model's activations are below about 1e-4 (untrained or unscaled weights?)"
    )


def _sample(calibration: dict[str, np.ndarray], index: int) -> dict[str, Any]:
    import torch

    return {key: torch.from_numpy(np.ascontiguousarray(a[index])) for key, a in calibration.items()}


def _flat(outputs: dict[str, Any]) -> np.ndarray:
    return np.concatenate([np.ravel(value.detach().numpy()).astype(np.float64) for value in outputs.values()])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norms) if norms > 0 else 0.0


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
    The boundary is float32 unless the spec asks for ``int8_io``. The flow runs in a fork of
    this process for at most ``options.pt2e_timeout_seconds`` (module docstring); a fork that
    crashes, hangs or fails is the entry's ``error``, with its signal or its last output line.
    """
    from stages.kit.child import LOG_TAIL, signal_name
    from stages.kit.contract import StageError
    from stages.kit.forked_cli import call_forked
    from stages.quantize.calibration import DEFAULT_LIMIT, calibration_arrays

    options = read_options(Pt2eOptions, request.options)
    limit = int(options.calibration_limit or DEFAULT_LIMIT)
    try:
        arrays, calibrated = calibration_arrays(request.spec, request.optional_input("calibration"), samples, limit)
    except StageError as exc:  # quantize.litert reports the same file's problem as int8's
        return {}, {"quantizer": QUANTIZER, "error": exc.message}
    calibration = {keys[n]: a for n, a in arrays.items()}
    out = request.output_dir
    result, log = out / RESULT, out / LOG
    timeout = float(options.pt2e_timeout_seconds or TIMEOUT)

    def body() -> int:
        import torch

        torch.set_num_threads(1)  # the parent's OpenMP pool has no threads in a fork (module docstring)
        made = _finish(litert_torch, wrapper, example, calibration, out / TARGET, renames, request.spec.int8_io, flags)
        result.write_text(json.dumps({"outputs": made[0], "info": made[1]}))
        return 0

    result.unlink(missing_ok=True)
    started = time.monotonic()
    code = call_forked(body, log, timeout)
    text = log.read_text(errors="replace")
    print(f"pt2e fork: exit {code}\n{text[-LOG_TAIL:]}", file=sys.stderr, flush=True)  # the stage log
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1][:300] if lines else "no output"
    if code == 0 and result.is_file():
        handed = json.loads(result.read_text())
        outputs, info = handed["outputs"], {"quantizer": QUANTIZER, "calibration": calibrated, **handed["info"]}
    else:
        outputs, info = {}, {"quantizer": QUANTIZER, "calibration": calibrated}
        if code is None:
            info["error"] = f"litert-torch's PT2E flow did not finish within {timeout:g} s and was stopped"
        elif code < 0:
            info["error"] = (
                f"litert-torch's PT2E flow crashed (signal {signal_name(-code)}, in its native code); "
                f"its last output: {last}"
            )
        else:
            info["error"] = f"litert-torch's PT2E flow failed (exit {code}): {last}"
    info["fork_seconds"] = round(time.monotonic() - started, 3)
    result.unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    if not outputs:
        (out / TARGET).unlink(missing_ok=True)
        (out / TARGET).with_suffix(".boundary.tflite").unlink(missing_ok=True)
    return outputs, info


def _finish(
    litert_torch: Any,
    wrapper: Any,
    example: dict[str, Any],
    calibration: dict[str, np.ndarray],
    target: Path,
    renames: dict[str, str],
    int8_io: bool,
    flags: dict[str, Any],
) -> tuple[dict[str, str], dict[str, Any]]:
    """In the fork: ``quantize``, then the boundary (float32 ports unless ``int8_io``, inputs
    renamed as in the float32 file) and the builtin-ops check; (outputs, info without the
    calibration's source)."""
    from stages.kit.tflite_ops import operators

    info = quantize(litert_torch, wrapper, example, calibration, target, flags)
    if "error" in info:
        return {}, info
    try:
        from stages.kit.tflite_boundary import rewrite

        # PT2E quantizes the boundary too: float32 ports (QUANTIZE/DEQUANTIZE inside) unless int8_io.
        staged = target.with_suffix(".boundary.tflite")
        rewrite(target, staged, renames=renames, float_ports=not int8_io)
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
