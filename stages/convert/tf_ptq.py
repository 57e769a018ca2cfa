"""int8 with TensorFlow's own converter, from a converter's SavedModel (``convert.onnx_tf``,
``convert.onnx2tf``; the TensorFlow of that environment).

The third int8 quantizer of the service, beside ai-edge-quantizer (which edits a float32
.tflite, ``stages.quantize``) and litert-torch's PT2E flow (``stages.convert.litert_torch_pt2e``):
``tf.lite.TFLiteConverter`` quantizes the SavedModel's graph while it lowers it, with
``Optimize.DEFAULT``, a representative dataset and ``TFLITE_BUILTINS_INT8`` (the flags and
why: ``stages.convert.tf_ptq_child``, which runs it in a child process with a time limit).

A convert stage calls ``produce`` when the plan asks for it (stage option ``tf_ptq``: the
job asks for int8 and the converter is a TFLite candidate); the result is output
``tflite_int8_tf_ptq`` (``model_int8_tf_ptq.tflite``) and the stage info's ``tf_ptq``
entry. The calibration is the job's (``stages.quantize.calibration.calibration_arrays``:
the upload, else the validation samples; the same arrays every other int8 quantizer
gets), fed in the SavedModel's layout and dtypes. A failure - bad calibration, a
converter error or abort, the time limit, custom or Select-TF ops in the result (stock
LiteRT cannot run them) - is ``info.tf_ptq.error``, never the stage's: ``quantize.litert``
lists the attempt as failed.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from stages.kit.failures import first_line
from stages.kit.results import TF_PTQ, prebuilt_output

TARGET = "model_int8_tf_ptq.tflite"
VARIANT = TF_PTQ  # the attempt's variant in quantize.litert
OUTPUT = prebuilt_output(VARIANT)
QUANTIZER = "tf-lite-converter"  # as the report names it, followed by the TensorFlow version
TIMEOUT = 1800.0  # seconds; the stage option ``quantizer_timeout_seconds`` overrides it
CHILD = "stages.convert.tf_ptq_child"
NO_INT8_BUILTIN = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
RECIPE = {
    "name": "tf.lite full-integer post-training quantization",
    "variant": VARIANT,
    "summary": "TFLiteConverter.from_saved_model with Optimize.DEFAULT, a representative dataset and "
    "TFLITE_BUILTINS_INT8: int8 weights (symmetric, per channel) and int8 activations (affine, per tensor, "
    "min/max calibration) for every op; float32 inputs/outputs with a QUANTIZE/DEQUANTIZE at the boundary "
    "(int8 ones with int8_io); integer inputs stay integer",
}


def wanted(request: Any) -> bool:
    """The plan asks this stage for TensorFlow's int8 file (stage option ``tf_ptq``)."""
    return bool(request.options.get(VARIANT))


def entry(error: str | None = None) -> dict[str, Any]:
    """The stage info's ``tf_ptq`` entry before the converter ran: ``{"quantizer", "version"}``
    (this environment's TensorFlow), with ``error`` when the file cannot be made at all."""
    from stages.kit.versions import version

    made: dict[str, Any] = {"quantizer": QUANTIZER, "version": version("tensorflow") or version("tensorflow-cpu")}
    return {**made, "error": error} if error else made


def produce(
    request: Any,
    saved_model: Path,
    samples: dict[str, Any],
    input_transposes: dict[str, list[int]] | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """({``tflite_int8_tf_ptq``: file name} or {}, the stage info's ``tf_ptq`` entry).

    ``saved_model``: the directory whose ``serving_default`` signature is quantized (still on
    disk: the caller deletes it afterwards); ``samples``: the validation samples by input
    name, ``[N, *shape]`` in PyTorch's layout (the calibration when none was uploaded);
    ``input_transposes``: per input name, the permutation from a PyTorch-layout sample to
    what the SavedModel takes (``[0, 2, 3, 1]`` for onnx2tf's NHWC inputs). At most
    ``options.calibration_limit`` samples; the child gets ``options.quantizer_timeout_seconds``
    (default 1800). The info has ``quantizer``, ``version`` (TensorFlow's), ``calibration``,
    and ``recipe``, ``converter``, ``calibrated_samples``, ``seconds`` or ``error``.
    """
    from stages.kit import samples as sample_io
    from stages.kit.child import run_child
    from stages.kit.contract import StageError
    from stages.quantize.calibration import DEFAULT_LIMIT, calibration_arrays

    info = entry()
    limit = int(request.options.get("calibration_limit") or DEFAULT_LIMIT)
    try:
        arrays, info["calibration"] = calibration_arrays(
            request.spec, request.optional_input("calibration"), samples, limit
        )
    except StageError as exc:  # quantize.litert reports the same file's problem as int8's
        return {}, {**info, "error": exc.message}
    started = time.monotonic()
    work = request.output_dir / "tf_ptq"
    work.mkdir(exist_ok=True)
    target = request.output_dir / TARGET
    sample_io.save(work / "calibration.npz", arrays)
    job = {
        "saved_model": str(saved_model),
        "calibration": str(work / "calibration.npz"),
        "input_transposes": input_transposes or {},
        "int8_io": request.spec.int8_io,
        "output": str(target),
        "report": str(work / "report.json"),
    }
    timeout = float(request.options.get("quantizer_timeout_seconds") or TIMEOUT)
    child = run_child(CHILD, job, work / "job.json", timeout, label="convert.tf_ptq")
    error = None
    if child.code is None:
        error = f"TensorFlow's converter timed out after {timeout:g} s"
    elif child.signal is not None:
        error = f"TensorFlow's converter crashed with signal {child.signal}"
    elif child.code != 0 or not target.is_file() or not (work / "report.json").is_file():
        error = f"TensorFlow's full-integer quantization failed: {_reason(child.log)}"
    else:
        report = json.loads((work / "report.json").read_text())
        info.update(
            recipe=dict(RECIPE),
            version=report["tensorflow"],
            converter=report["converter"],
            calibrated_samples=report["calibrated_samples"],
        )
        error = _unrunnable(target)
    info["seconds"] = round(time.monotonic() - started, 3)
    if error is not None:
        target.unlink(missing_ok=True)
        return {}, {**info, "error": error[:500]}
    return {OUTPUT: TARGET}, info


def _unrunnable(target: Path) -> str | None:
    """Why stock LiteRT cannot run the file (custom or Select-TF ops), or None."""
    from stages.kit.tflite_ops import operators

    try:
        ops = operators(target)
    except Exception as exc:  # noqa: BLE001 - a flatbuffer the reader refuses is no usable file
        return f"TensorFlow's int8 file cannot be read: {first_line(exc)}"
    if ops["flex"] or ops["custom"]:
        return f"TensorFlow's int8 file has custom ops {[*ops['flex'], *ops['custom']]}, which stock LiteRT cannot run"
    return None


def _reason(log: str) -> str:
    """The converter's own words: the TensorFlow ops it found no int8 builtin for (MLIR says
    "'tf.Erf' op is neither a custom op nor a flex op" once per node, then only "failed while
    converting: 'main'"), else its last error line."""
    ops = sorted(set(NO_INT8_BUILTIN.findall(log)))
    if ops:
        return f"no int8 TFLite builtin for the TensorFlow ops {', '.join(ops)} (TFLITE_BUILTINS_INT8 only)"
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() and not line.startswith(("File ", "Traceback")):
            return line[:400]
    return lines[-1][:400] if lines else "no output"
