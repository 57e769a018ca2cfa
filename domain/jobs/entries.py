"""The report's artifact entries: one per requested artifact a stage produced.

Each entry holds the file's identity (name, kind, precision, toolchain, size, sha256),
the runtime it was checked in and that check's numbers (see docs/report.md).
"""

from __future__ import annotations

from typing import Any

from domain.jobs import names
from domain.jobs.records import Records
from domain.jobs.selection import choose, choose_saved_model
from stages.kit.fields import nested
from stages.kit.results import Check, ConvertInfo, ExportInfo, QuantizeInfo, StoredFile, ValidateInfo
from stages.kit.spec import PlanSpec

TFLITE_EXTRA = (
    "operators",
    "operator_counts",
    "transpose_count",
    "latency_ms",
    "requires_flex",
    "size_bytes",
    "dynamic_batch",
    "frozen_dims",
    "sample_shapes",
    "probes",
)
# What a .tflite entry copies from its check when the stage wrote it (quantized files mostly).
TFLITE_DETAILS = (
    "vs_float32",
    "quantizer",
    "calibration",
    "advisory",
    "notes",
    "signature",
    "warnings",
    "min_cosine",
    "top1_agreement",
    "size_ratio_vs_float32",
    "source",  # quantized: the candidate and float32 file it was made from
    "float_ops",  # quantized: per op name, the ops that stayed float32
    "error_sources",  # a degraded or failed quantized file: the op outputs that drift most
)


def artifact_entry(
    kind: str,
    name: str,
    precision: str,
    toolchain: str,
    output: StoredFile,
    check: Check | None,
    runtime: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An entry; an artifact without a check is ``fail`` with the reason ``not validated``."""
    check = check or Check()
    entry = {
        "name": name,
        "kind": kind,
        "precision": precision,
        "toolchain": toolchain,
        "size": output.size,
        "sha256": output.sha256,
        "runtime": runtime,
        "verdict": check.verdict,
        "reasons": check.reasons if check.reasons is not None else ([] if check.raw else ["not validated"]),
        "tolerance": check.tolerance,
        "samples": check.samples,
        "outputs": check.outputs,
        "seconds": check.seconds,
    }
    entry.update(extra or {})
    return entry


def tflite_entry(
    name: str, precision: str, toolchain: str, output: StoredFile, check: Check | None, runtime: str
) -> dict[str, Any]:
    """A .tflite entry: the common fields, then its operators, latency and the quantizer's notes."""
    checked = check or Check()
    fields = checked.present(TFLITE_EXTRA)
    fields["requires_flex"] = checked.requires_flex
    fields.update(checked.present(TFLITE_DETAILS))
    if checked.calibration_warning:  # synthetic calibration: accuracy on real data is unknown
        fields["warnings"] = [*(checked.warnings or []), checked.calibration_warning]
    return artifact_entry("tflite", name, precision, toolchain, output, check, runtime, fields)


def build_artifacts(spec: PlanSpec, records: Records) -> list[tuple[dict[str, Any], str]]:
    """Report entries for the requested targets, each with the object key it is stored under."""
    entries: list[tuple[dict[str, Any], str]] = []
    export = records.export
    out = export.output("onnx")
    if "onnx" in spec.targets and out is not None:
        provenance = export.info_as(ExportInfo)
        versions = provenance.versions
        runtime = f"onnxruntime {versions['onnxruntime'] if 'onnxruntime' in versions else '?'}"
        extra = {"opset": provenance.opset, "exporter": provenance.exporter}
        entry = artifact_entry("onnx", "model.onnx", "float32", "torch", out, export.check("onnx"), runtime, extra)
        entries.append((entry, out.key))
    saved_model = choose_saved_model(spec, records) if "saved_model" in spec.targets else None
    convert = records.convert(saved_model.name) if saved_model is not None else None
    out = convert.output("saved_model") if convert is not None else None
    if saved_model is not None and convert is not None and out is not None:
        info = convert.info_as(ConvertInfo)
        version = info.versions.get("tensorflow") or nested(convert.info, "saved_model", "tensorflow") or "?"
        runtime = f"tensorflow {version} (serving_default)"
        check = saved_model.metrics
        probed = check.present(("sample_shapes", "probes")) if check is not None else {}
        entry = artifact_entry(
            "saved_model", "saved_model.zip", "float32", saved_model.name, out, check, runtime, probed
        )
        entries.append((entry, out.key))
    if "tflite" not in spec.targets:
        return entries
    chosen = choose(spec, records)
    if chosen is not None:
        convert = records.convert(chosen.name)
        assert convert is not None  # a chosen candidate was validated, so converted
        validate = records.validation(chosen.name).info_as(ValidateInfo)
        out = convert.outputs["tflite_float32"]
        signature = {
            "inputs": validate.tflite_inputs,
            "outputs": validate.tflite_outputs,
            "layout": convert.info_as(ConvertInfo).layout if "layout" in convert.info else spec.layout,
        }
        runtime = validate.runtime or "ai-edge-litert"
        entry = tflite_entry("model_float32.tflite", "float32", chosen.name, out, chosen.metrics, runtime)
        entries.append(({**entry, "signature": signature}, out.key))
    quantize = records.quantize
    for precision in spec.quantized:
        key = f"tflite_{precision}"
        out = quantize.output(key)
        if out is None:
            continue
        runtime = quantize.info_as(QuantizeInfo).runtime or "ai-edge-litert"
        check = quantize.check(key)
        toolchain = (check.toolchain if check is not None else None) or (chosen.name if chosen else None)
        entry = tflite_entry(f"model_{precision}.tflite", precision, toolchain or "?", out, check, runtime)
        entries.append((entry, out.key))
    return entries


def stage_of_failing(entry: dict[str, Any]) -> str:
    """The stage whose check failed a float32 artifact entry."""
    if entry["kind"] == "onnx":
        return names.EXPORT
    if entry["kind"] == "saved_model":
        return names.convert(entry["toolchain"])
    return names.validate(entry["toolchain"])
