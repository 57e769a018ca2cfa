"""Stage ``convert.onnx_tf`` (onnx-tf env): ONNX -> SavedModel -> float32 TFLite.

Inputs: ``onnx``, ``samples``, ``reference`` (from ``export.prepare``). The SavedModel
comes from ``onnx_tf.backend.prepare(...).export_graph``; its ``serving_default``
signature takes the ONNX input names (the spec's) and returns the ONNX output names
(the stable ones), which is checked, not assumed, when it is validated against the
PyTorch reference. The TFLite file is converted from that SavedModel with builtin
ops only; Select-TF ("flex") ops are allowed only as a fallback, and flagged.

Converter defaults matter for float32: no ``optimizations`` (``Optimize.DEFAULT``
would quantize weights to int8) and no ``supported_types``; the flags used are
recorded in ``info.converter``.

When the SavedModel was written but the TFLite converter fails on it, a job that asked
for ``saved_model`` keeps it: the stage succeeds without ``tflite_float32`` and records
that failure as ``info.failed.tflite_float32 = {code, reason}`` (the .tflite's, not the
candidate's); a job without that target fails the stage as before.

With the stage option ``tf_ptq`` (the job asks for int8; optional input ``calibration``,
the upload): also ``tflite_int8_tf_ptq`` (model_int8_tf_ptq.tflite), TensorFlow's
full-integer quantization of the same SavedModel (``stages.convert.tf_ptq``), which
``quantize.litert`` judges as one more int8 attempt; ``info.tf_ptq`` says how it went
(its failure is its ``error``, never the stage's).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from stages.convert import onnx_tf_known, tf_ptq
from stages.kit import samples as sample_io
from stages.kit import saved_model as saved_model_kit
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.options import OperatorOptions, read_options
from stages.kit.versions import versions

ONNX_TF_MAX_OPSET = 15


def run(request: StageRequest) -> StageResult:
    # Refuse what onnx-tf cannot read before paying for the TensorFlow import.
    model, opset = _load_onnx(request.input_path("onnx"))
    # Quiet TensorFlow's C++ start-up chatter; must be set before the import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    threads = int(read_options(OperatorOptions, request.options).threads or 1)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tolerance = request.spec.tolerance["float32"]
    samples = sample_io.load(request.input_path("samples"))
    reference = sample_io.load(request.input_path("reference"))
    out = request.output_dir
    saved_model_dir = out / "saved_model"

    started = time.monotonic()
    patched = _convert_to_saved_model(model, saved_model_dir)
    convert_seconds = time.monotonic() - started

    started = time.monotonic()
    try:
        metrics, signature = saved_model_kit.validate(
            saved_model_dir, samples, reference, tolerance, probes_from=request.input_path("reference")
        )
    except Exception as exc:  # a SavedModel that cannot run: a known onnx-tf limitation, or unforeseen
        raise onnx_tf_known.stacked_lstm(model, exc) or exc from None
    metrics["seconds"] = round(time.monotonic() - started, 3)

    saved_model_kit.zip_dir(saved_model_dir, out / "saved_model.zip")

    started = time.monotonic()
    outputs = {"saved_model": "saved_model.zip", "tflite_float32": "model_float32.tflite"}
    failed: dict[str, dict[str, str]] = {}
    flags: dict[str, Any] = {}
    requires_flex, builtin_error = False, None
    try:
        flags, requires_flex, builtin_error = _convert_to_tflite(saved_model_dir, out / "model_float32.tflite")
    except StageError as exc:
        if "saved_model" not in request.spec.targets:
            raise
        # The SavedModel was made and checked: it stays; the .tflite's failure is its own.
        del outputs["tflite_float32"]
        failed["tflite_float32"] = {"code": str(exc.code), "reason": exc.message}
    tflite_seconds = time.monotonic() - started
    int8: dict[str, Any] | None = None
    if tf_ptq.wanted(request):  # TensorFlow's int8 file, from the same SavedModel (in a child)
        made, int8 = tf_ptq.produce(request, saved_model_dir, samples)
        outputs.update(made)
    # Only the zip is an output; the directory was needed by the TFLite converters.
    shutil.rmtree(saved_model_dir, ignore_errors=True)

    info: dict[str, Any] = {
        "versions": {"tensorflow": tf.__version__, **versions("onnx", ("onnx_tf", "onnx-tf"), "numpy")},
        "converter": flags,
        "requires_flex": requires_flex,
        "builtin_only_error": builtin_error,
        "onnx_opset": opset,
        "onnx_tf_patched_handlers": patched,
        "signature": signature,
        "failed": failed,
        tf_ptq.VARIANT: int8,  # the entry ConvertInfo reads (stages.kit.results)
        "seconds": {
            "onnx_to_saved_model": round(convert_seconds, 3),
            "saved_model_to_tflite": round(tflite_seconds, 3),
        },
    }
    return StageResult(
        outputs=outputs,
        metrics={"saved_model": metrics},
        info=info,
    )


def _load_onnx(onnx_path: Path) -> tuple[Any, int | None]:
    import onnx

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # a truncated or foreign file
        raise StageError(StageCode.CONVERSION_FAILED, f"not a readable ONNX file: {_last_line(exc)}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset > ONNX_TF_MAX_OPSET:
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"the ONNX file has opset {opset}; onnx-tf 1.10 reads up to {ONNX_TF_MAX_OPSET}. "
            f"Export at opset {ONNX_TF_MAX_OPSET} or lower (or use another toolchain)",
        )
    return model, opset


def _convert_to_saved_model(model: Any, saved_model_dir: Path) -> list[str]:
    from onnx_tf.backend import prepare

    from stages.convert import onnx_tf_patches

    patched = onnx_tf_patches.install()
    try:
        rep = prepare(model, logging_level="WARNING")
        rep.export_graph(str(saved_model_dir))
    except Exception as exc:  # onnx-tf raises anything from its handlers
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"onnx-tf could not convert the model: {_last_line(exc)}. "
            "An unsupported operator usually needs another opset or toolchain "
            "(e.g. onnx2tf), or a model change that avoids it",
        ) from None
    return patched


def _convert_to_tflite(saved_model_dir: Path, target: Path) -> tuple[dict[str, Any], bool, str | None]:
    import tensorflow as tf

    builtin_error: str | None = None
    for ops in (["TFLITE_BUILTINS"], ["TFLITE_BUILTINS", "SELECT_TF_OPS"]):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, op) for op in ops]
        converter.optimizations = []
        converter.target_spec.supported_types = []
        converter.allow_custom_ops = False
        flags = {
            "source": "saved_model",
            "signature_keys": ["serving_default"],
            "supported_ops": ops,
            "optimizations": [],
            "supported_types": [],
            "allow_custom_ops": False,
            "experimental_new_converter": bool(converter.experimental_new_converter),
        }
        try:
            target.write_bytes(converter.convert())
        except Exception as exc:  # the MLIR converter raises ConverterError and more
            if builtin_error is None:
                builtin_error = _builtin_failure(exc)
                continue
            raise StageError(
                StageCode.TFLITE_CONVERSION_FAILED,
                f"TFLite conversion failed even with Select-TF "
                f"ops: {_last_line(exc)} (builtin-only: {builtin_error}). The model uses an "
                "operation TFLite cannot express; try another toolchain",
            ) from None
        return flags, "SELECT_TF_OPS" in ops, builtin_error
    raise AssertionError("unreachable")


def _builtin_failure(exc: BaseException) -> str:
    # The converter lists every TF op it could not lower as "tf.Name(...)"; the names are
    # what a user needs (e.g. Erf from exact GELU), the last line alone names only one.
    ops = sorted(set(re.findall(r"\btf\.(\w+)\(", str(exc))))
    if ops:
        return f"not TFLite builtins: {', '.join(ops)}"
    return _last_line(exc)


def _last_line(exc: BaseException, limit: int = 500) -> str:
    # TF and onnx-tf put the cause at the end of long multi-line messages.
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1].rstrip(".") if lines else ""
    kind = type(exc).__name__
    text = last if last.startswith(f"{kind}:") else f"{kind}: {last}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
