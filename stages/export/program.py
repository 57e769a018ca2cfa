"""ONNX export of an uploaded ExportedProgram, at the opset its consumers read.

The dynamo exporter translates the program as it is (its own dynamic dimensions,
renamed after the signature's) at opset 18 or newer. When a consumer reads less
(onnx-tf: 15), in this order:

1. ``onnx.version_converter`` on the opset-18 file, kept if onnxruntime still agrees
   with the reference (operators newer than the target, e.g. LayerNormalization, are
   decomposed first, ``stages.export.onnx_decompose``; others without an adapter fail);
2. the legacy (TorchScript-based) exporter on ``ep.module()`` at the target opset,
   unless ``exporter: dynamo`` was asked for;
3. otherwise the opset-18 file is kept with ``onnx_tf_compatible: false`` and the
   reason, when another consumer (onnx2tf) reads it and the opset was not asked for
   explicitly; else ``opset_not_supported`` names the consumers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.export.formats import Loaded
from stages.export.onnx_export import (
    DEFAULT_OPSET,
    Attempt,
    Exported,
    ExportFailed,
    export_best,
    export_program,
    may_keep_higher_opset,
    onnx_consumers,
    validate_attempt,
)
from stages.export.onnx_file import conversion_info, convert_opset, rename_dims
from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.spec import PlanSpec


def export_program_best(
    loaded: Loaded,
    wrapper: Any,
    example: tuple[Any, ...],
    out: Path,
    output_names: list[str],
    opset: int,
    exporters: tuple[str, ...],
    declared: dict[str, list[int | str]] | None,
    spec: PlanSpec,
    validate: Callable[[Path], dict[str, Any]],
) -> Exported:
    input_names = [item["name"] for item in loaded.inputs]
    native = max(opset, DEFAULT_OPSET)
    attempts: list[Attempt] = []
    conversion: dict[str, Any] | None = None
    native_file = out / "model.program.onnx"
    native_metrics: dict[str, Any] | None = None

    if "dynamo" in exporters:
        attempt = export_program(loaded.program, example, native_file, input_names, output_names, native)
        attempts.append(attempt)
        if attempt.ok:
            native_metrics = _validated(attempt, native_file, loaded, declared, validate)
        passed = native_metrics is not None and native_metrics["verdict"] == "pass"
        if passed and native == opset:
            native_file.replace(out / "model.onnx")
            return Exported("dynamo", native_metrics or {}, attempts, opset)
        if passed:
            converted = out / "model.converted.onnx"
            step = convert_opset(native_file, converted, opset, validate)
            attempts.append(step)
            conversion = conversion_info(native, opset, step)
            if step.ok:
                converted.replace(out / "model.onnx")
                native_file.unlink(missing_ok=True)
                return Exported("dynamo", step.metrics or {}, attempts, opset, conversion=conversion)

    if "torchscript" in exporters:
        dynamic = {item["name"]: sample_io.dynamic_axes(item["shape"]) for item in loaded.inputs}
        try:
            exporter, metrics, tried = export_best(
                ("torchscript",), wrapper, example, out, input_names, output_names, dynamic, opset, declared, validate
            )
        except ExportFailed as failed:
            attempts.extend(failed.attempts)
        else:
            attempts.extend(tried)
            if metrics["verdict"] == "pass" or native_metrics is None:
                native_file.unlink(missing_ok=True)
                return Exported(exporter, metrics, attempts, opset, conversion=conversion)

    tried_text = "; ".join(f"{a.exporter}: {a.error}" for a in attempts if a.error)
    if native_metrics is not None and (native == opset or may_keep_higher_opset(spec)):
        native_file.replace(out / "model.onnx")
        reason = f"no way to opset {opset} worked ({tried_text})" if native != opset else None
        return Exported("dynamo", native_metrics, attempts, native, conversion=conversion, onnx_tf_reason=reason)
    native_file.unlink(missing_ok=True)
    if native_metrics is not None:
        wanted = (
            f"spec.opset is {opset}"
            if spec.opset is not None
            else (f"{', '.join(onnx_consumers(spec))} read(s) opsets up to {opset}")
        )
        raise StageError(
            StageCode.OPSET_NOT_SUPPORTED,
            f"the ExportedProgram exports at opset {native}, but {wanted}, and no way to opset {opset} "
            f"worked: {tried_text}. Choose a toolchain that reads opset {native} (onnx2tf)"
            + (", or leave spec.opset null" if spec.opset is not None else ""),
        )
    raise StageError(
        StageCode.EXPORT_FAILED,
        f"ONNX export of the ExportedProgram failed at opset {opset}: {tried_text}. "
        "Try another exporter or opset in the spec",
    )


def _validated(
    attempt: Attempt,
    path: Path,
    loaded: Loaded,
    declared: dict[str, list[int | str]] | None,
    validate: Callable[[Path], dict[str, Any]],
) -> dict[str, Any] | None:
    rename_dims(path, loaded.dim_names)
    return validate_attempt(attempt, path, declared, validate)
