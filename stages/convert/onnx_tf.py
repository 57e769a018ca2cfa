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
"""

from __future__ import annotations

import os
import re
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

from stages.convert import onnx_tf_known
from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.naming import match_names
from stages.kit.options import OperatorOptions, read_options
from stages.kit.versions import versions

ONNX_TF_MAX_OPSET = 15
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


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
        metrics, signature = _validate_saved_model(saved_model_dir, samples, reference, tolerance)
    except Exception as exc:  # a SavedModel that cannot run: a known onnx-tf limitation, or unforeseen
        raise onnx_tf_known.stacked_lstm(model, exc) or exc from None
    metrics["seconds"] = round(time.monotonic() - started, 3)

    _zip_dir(saved_model_dir, out / "saved_model.zip")

    started = time.monotonic()
    flags, requires_flex, builtin_error = _convert_to_tflite(saved_model_dir, out / "model_float32.tflite")
    tflite_seconds = time.monotonic() - started
    # Only the zip is an output; the directory was needed by the TFLite converter.
    shutil.rmtree(saved_model_dir, ignore_errors=True)

    info: dict[str, Any] = {
        "versions": {"tensorflow": tf.__version__, **versions("onnx", ("onnx_tf", "onnx-tf"), "numpy")},
        "converter": flags,
        "requires_flex": requires_flex,
        "builtin_only_error": builtin_error,
        "onnx_opset": opset,
        "onnx_tf_patched_handlers": patched,
        "signature": signature,
        "seconds": {
            "onnx_to_saved_model": round(convert_seconds, 3),
            "saved_model_to_tflite": round(tflite_seconds, 3),
        },
    }
    return StageResult(
        outputs={"saved_model": "saved_model.zip", "tflite_float32": "model_float32.tflite"},
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


def _validate_saved_model(
    saved_model_dir: Path, samples: dict[str, Any], reference: dict[str, Any], tolerance: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np
    import tensorflow as tf

    from stages.kit.metrics import compare

    loaded = tf.saved_model.load(str(saved_model_dir))
    if "serving_default" not in loaded.signatures:
        raise StageError(StageCode.CONVERSION_FAILED, "the SavedModel has no serving_default signature")
    function = loaded.signatures["serving_default"]
    specs: dict[str, Any] = function.structured_input_signature[1]
    out_keys = list(function.structured_outputs)
    in_map, in_left = match_names(list(samples), list(specs))
    out_map, out_left = match_names(list(reference), out_keys)
    if in_left or out_left:
        raise StageError(
            StageCode.CONVERSION_FAILED,
            f"the SavedModel signature ({sorted(specs)} -> {out_keys}) "
            f"does not match the model's inputs {list(samples)} / outputs {list(reference)}",
        )
    count = next(iter(samples.values())).shape[0]
    collected: dict[str, list[Any]] = {name: [] for name in reference}
    for index in range(count):
        feed = {key: tf.constant(samples[name][index], dtype=specs[key].dtype) for name, key in in_map.items()}
        result = function(**feed)
        for name, key in out_map.items():
            collected[name].append(result[key].numpy())
    actual = {name: np.stack(values) for name, values in collected.items()}
    signature = {
        "inputs": {key: {"shape": _shape(spec.shape), "dtype": spec.dtype.name} for key, spec in specs.items()},
        "outputs": out_keys,
        "input_map": in_map,
        "output_map": out_map,
    }
    return compare(reference, actual, tolerance), signature


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


def _zip_dir(source: Path, target: Path) -> None:
    # Sorted entries, fixed timestamps and modes: the same SavedModel zips to the same bytes.
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            relative = Path("saved_model") / path.relative_to(source)
            name = relative.as_posix() + ("/" if path.is_dir() else "")
            entry = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            entry.external_attr = ((0o40755 if path.is_dir() else 0o100644) << 16) | (0x10 if path.is_dir() else 0)
            entry.compress_type = zipfile.ZIP_STORED if path.is_dir() else zipfile.ZIP_DEFLATED
            archive.writestr(entry, b"" if path.is_dir() else path.read_bytes())


def _builtin_failure(exc: BaseException) -> str:
    # The converter lists every TF op it could not lower as "tf.Name(...)"; the names are
    # what a user needs (e.g. Erf from exact GELU), the last line alone names only one.
    ops = sorted(set(re.findall(r"\btf\.(\w+)\(", str(exc))))
    if ops:
        return f"not TFLite builtins: {', '.join(ops)}"
    return _last_line(exc)


def _shape(shape: Any) -> list[int | None]:
    return [None if dim is None else int(dim) for dim in shape.as_list()] if shape.rank is not None else []


def _last_line(exc: BaseException, limit: int = 500) -> str:
    # TF and onnx-tf put the cause at the end of long multi-line messages.
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1].rstrip(".") if lines else ""
    kind = type(exc).__name__
    text = last if last.startswith(f"{kind}:") else f"{kind}: {last}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
