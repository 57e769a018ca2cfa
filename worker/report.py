"""The accuracy report and the job's final verdict, assembled from the stages' results.

No framework here: the stages measured everything; this module arranges their numbers,
applies the rules of DESIGN's "Verdicts", registers the artifacts and ends the job.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from app.models import Artifact, Job
from app.models.base import utcnow
from app.storage import ObjectStore

REPORT_VERSION = 1
MEDIA_TYPES = {
    "onnx": "application/onnx",
    "saved_model": "application/zip",
    "tflite": "application/vnd.tflite",
}


def _stage_results(job: Job) -> dict[str, dict[str, Any]]:
    return {s.name: dict(s.result or {}) for s in job.stages if s.state == "succeeded"}


def _artifact_entry(
    kind: str,
    name: str,
    precision: str,
    toolchain: str,
    output: dict[str, Any],
    metrics: dict[str, Any] | None,
    runtime: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metrics = metrics or {}
    entry = {
        "name": name,
        "kind": kind,
        "precision": precision,
        "toolchain": toolchain,
        "size": output["size"],
        "sha256": output["sha256"],
        "runtime": runtime,
        "verdict": metrics.get("verdict", "fail"),
        "reasons": metrics.get("reasons", ["not validated"] if not metrics else []),
        "tolerance": metrics.get("tolerance"),
        "samples": metrics.get("samples"),
        "outputs": metrics.get("outputs", {}),
        "seconds": metrics.get("seconds"),
    }
    entry.update(extra or {})
    return entry


def build_artifacts(job: Job, results: dict[str, dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Report entries for the requested targets, each with the object key it is stored under."""
    targets = set(job.spec.get("targets", []))
    export = results.get("export_onnx", {})
    convert = results.get("convert_tf", {})
    validate = results.get("validate_tflite", {})
    toolchain = job.spec.get("toolchain", "onnx-tf")
    entries: list[tuple[dict[str, Any], str]] = []
    versions_export = export.get("info", {}).get("versions", {})
    if "onnx" in targets and "onnx" in export.get("outputs", {}):
        out = export["outputs"]["onnx"]
        entries.append(
            (
                _artifact_entry(
                    "onnx",
                    "model.onnx",
                    "float32",
                    "torch",
                    out,
                    export.get("metrics", {}).get("onnx"),
                    f"onnxruntime {versions_export.get('onnxruntime', '?')}",
                    {
                        "opset": export.get("info", {}).get("opset"),
                        "exporter": export.get("info", {}).get("exporter"),
                    },
                ),
                out["key"],
            )
        )
    convert_info = convert.get("info", {})
    tf_version = convert_info.get("versions", {}).get("tensorflow", "?")
    if "saved_model" in targets and "saved_model" in convert.get("outputs", {}):
        out = convert["outputs"]["saved_model"]
        entries.append(
            (
                _artifact_entry(
                    "saved_model",
                    "saved_model.zip",
                    "float32",
                    toolchain,
                    out,
                    convert.get("metrics", {}).get("saved_model"),
                    f"tensorflow {tf_version} (serving_default)",
                ),
                out["key"],
            )
        )
    if "tflite" in targets and "tflite_float32" in convert.get("outputs", {}):
        out = convert["outputs"]["tflite_float32"]
        checked = validate.get("metrics", {}).get("tflite_float32") or validate.get("metrics", {})
        runtime = validate.get("info", {}).get("runtime", "ai-edge-litert")
        extra = {
            key: checked.get(key)
            for key in ("operators", "transpose_count", "latency_ms", "requires_flex", "size_bytes")
            if key in checked
        }
        extra["requires_flex"] = bool(checked.get("requires_flex") or convert_info.get("requires_flex"))
        entries.append(
            (
                _artifact_entry("tflite", "model_float32.tflite", "float32", toolchain, out, checked, runtime, extra),
                out["key"],
            )
        )
    return entries


def build_report(job: Job) -> dict[str, Any]:
    results = _stage_results(job)
    export = results.get("export_onnx", {})
    info = export.get("info", {})
    spec = job.spec
    artifacts = [entry for entry, _ in build_artifacts(job, results)]
    reasons: list[str] = []
    produced = {entry["kind"] for entry in artifacts}
    for target in spec.get("targets", []):
        if target not in produced:
            reasons.append(f"target {target!r} was not produced")
    for entry in artifacts:
        if entry["verdict"] != "pass":
            reasons.append(f"{entry['name']}: " + "; ".join(entry["reasons"] or [entry["verdict"]]))
    precisions: dict[str, Any] = {}
    for precision in spec.get("quantization", ["float32"]):
        if precision == "float32":
            precisions[precision] = {"status": "produced" if "tflite" in produced else "not_requested"}
        else:
            precisions[precision] = {
                "status": "not_produced",
                "code": "precision_unavailable",
                "reason": f"{precision} quantization is not available on this server yet",
            }
    samples_source = "uploaded" if job.inputs_key else f"synthetic (seed {spec.get('seed', 0)})"
    return {
        "report_version": REPORT_VERSION,
        "job_id": job.id,
        "generated_at": utcnow().isoformat(),
        "verdict": "pass" if not reasons else "fail",
        "reasons": reasons,
        "model": {
            "format": spec.get("model_format"),
            "filename": job.model_filename,
            "size": job.model_size,
            "sha256": job.model_sha256,
            "architecture": spec.get("architecture"),
            "parameters": info.get("parameters"),
        },
        "reference": {
            "runtime": info.get("reference_runtime", "pytorch"),
            "versions": info.get("versions", {}),
        },
        "validation": {
            "samples": (export.get("metrics", {}).get("onnx") or {}).get("samples"),
            "source": samples_source,
            "tolerance": spec.get("tolerance"),
        },
        "inputs": spec.get("inputs", []),
        "outputs": _outputs(info),
        "artifacts": artifacts,
        "precisions": precisions,
        "stages": [
            {
                "name": s.name,
                "toolchain": s.toolchain,
                "state": s.state,
                "seconds": s.seconds,
                "attempts": s.attempts,
                "peak_rss_bytes": (s.result or {}).get("peak_rss_bytes"),
                "isolation": (s.result or {}).get("isolation"),
            }
            for s in job.stages
        ],
        "attempts": [_attempt(job, results)],
    }


def _outputs(info: dict[str, Any]) -> list[dict[str, Any]]:
    shapes = info.get("output_shapes") or {}
    names = info.get("output_names") or []
    if isinstance(shapes, dict):
        return [{"name": name, "shape": shapes.get(name)} for name in names]
    return [{"name": name, "shape": shape} for name, shape in zip(names, shapes, strict=False)]


def _attempt(job: Job, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    export, convert = results.get("export_onnx", {}), results.get("convert_tf", {})
    return {
        "toolchain": job.spec.get("toolchain"),
        "chosen": True,
        "exporter": export.get("info", {}).get("exporter"),
        "export_attempts": export.get("info", {}).get("export_attempts"),
        "opset": export.get("info", {}).get("opset"),
        "seed": job.spec.get("seed", 0),
        "converter": convert.get("info", {}).get("converter"),
        "versions": {
            **export.get("info", {}).get("versions", {}),
            **convert.get("info", {}).get("versions", {}),
        },
        "lock_sha256": {name: r.get("lock_sha256") for name, r in results.items() if r.get("lock_sha256")},
    }


def finish_job(session: Session, store: ObjectStore, job: Job) -> None:
    """Write the report, register the artifacts, and give the job its final status."""
    results = _stage_results(job)
    report = build_report(job)
    key = f"jobs/{job.id}/report.json"
    writer = store.open_writer(key)
    writer.write(json.dumps(report, indent=2, allow_nan=False).encode())
    writer.commit()
    job.report_key = key
    existing = {a.name for a in job.artifacts}
    for entry, object_key in build_artifacts(job, results):
        if entry["name"] in existing:
            continue  # a redelivered report stage must not register twice
        job.artifacts.append(
            Artifact(
                name=entry["name"],
                object_key=object_key,
                size=entry["size"],
                sha256=entry["sha256"],
                media_type=MEDIA_TYPES[entry["kind"]],
                precision=entry["precision"],
                toolchain=entry["toolchain"],
            )
        )
    now = utcnow()
    job.finished_at, job.stage = now, None
    if report["verdict"] == "pass":
        job.status = "succeeded"
    else:
        failing = next((a for a in report["artifacts"] if a["verdict"] != "pass"), None)
        stage_of = {"onnx": "export_onnx", "saved_model": "convert_tf", "tflite": "validate_tflite"}
        job.status = "failed"
        job.error_code = "accuracy_check_failed" if failing else "target_missing"
        job.error_stage = stage_of[failing["kind"]] if failing else "report"
        job.error_message = (
            "; ".join(report["reasons"])
            + ". The artifacts and the report are kept: see GET /v1/jobs/{id}/report for every number."
        )
    session.flush()
