"""The accuracy report and the job's final verdict, assembled from the stages' results.

No framework here: the stages measured everything; this module arranges their numbers,
applies the rules of DESIGN's "Verdicts", registers the artifacts and ends the job.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy.orm import Session

from domain.jobs.plan import slug
from domain.jobs.selection import choose, collect, validation
from domain.models import Artifact, Job
from domain.models.base import utcnow
from domain.storage import ObjectStore
from stages.kit.codes import StageCode

REPORT_VERSION = 2
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


TFLITE_EXTRA = (
    "operators",
    "operator_counts",
    "transpose_count",
    "latency_ms",
    "requires_flex",
    "size_bytes",
    "dynamic_batch",
)


def _tflite_entry(
    name: str,
    precision: str,
    toolchain: str,
    output: dict[str, Any],
    metrics: dict[str, Any] | None,
    runtime: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    checked = metrics or {}
    fields = {key: checked.get(key) for key in TFLITE_EXTRA if key in checked}
    fields["requires_flex"] = bool(checked.get("requires_flex"))
    quantized = ("min_cosine", "top1_agreement", "size_ratio_vs_float32")
    for key in ("vs_float32", "quantizer", "calibration", "advisory", "notes", "signature", "warnings", *quantized):
        if key in checked:
            fields[key] = checked[key]
    calibration_warning = (checked.get("calibration") or {}).get("warning")
    if calibration_warning:  # synthetic calibration: accuracy on real data is unknown
        fields["warnings"] = [*(fields.get("warnings") or []), calibration_warning]
    return _artifact_entry("tflite", name, precision, toolchain, output, metrics, runtime, {**fields, **(extra or {})})


def build_artifacts(job: Job, results: dict[str, dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Report entries for the requested targets, each with the object key it is stored under."""
    targets = set(job.spec.get("targets", []))
    export = results.get("export_onnx", {})
    entries: list[tuple[dict[str, Any], str]] = []
    export_info = export.get("info", {})
    if "onnx" in targets and "onnx" in export.get("outputs", {}):
        out = export["outputs"]["onnx"]
        runtime = f"onnxruntime {export_info.get('versions', {}).get('onnxruntime', '?')}"
        extra = {"opset": export_info.get("opset"), "exporter": export_info.get("exporter")}
        entries.append(
            (
                _artifact_entry(
                    "onnx", "model.onnx", "float32", "torch", out, export.get("metrics", {}).get("onnx"), runtime, extra
                ),
                out["key"],
            )
        )
    onnx_tf = results.get("convert_onnx_tf", {})
    if "saved_model" in targets and "saved_model" in onnx_tf.get("outputs", {}):
        out = onnx_tf["outputs"]["saved_model"]
        tf_version = onnx_tf.get("info", {}).get("versions", {}).get("tensorflow", "?")
        entries.append(
            (
                _artifact_entry(
                    "saved_model",
                    "saved_model.zip",
                    "float32",
                    "onnx-tf",
                    out,
                    onnx_tf.get("metrics", {}).get("saved_model"),
                    f"tensorflow {tf_version} (serving_default)",
                ),
                out["key"],
            )
        )
    if "tflite" not in targets:
        return entries
    chosen = choose(job.spec, results)
    if chosen is not None:
        convert = results[f"convert_{slug(chosen.name)}"]
        validate = validation(results, chosen.name)
        out = convert["outputs"]["tflite_float32"]
        runtime = validate.get("info", {}).get("runtime", "ai-edge-litert")
        signature = {
            "inputs": validate.get("info", {}).get("tflite_inputs"),
            "outputs": validate.get("info", {}).get("tflite_outputs"),
            "layout": convert.get("info", {}).get("layout", job.spec.get("layout", "nchw")),
        }
        entry = _tflite_entry("model_float32.tflite", "float32", chosen.name, out, chosen.metrics, runtime)
        entries.append(({**entry, "signature": signature}, out["key"]))
    quantize = results.get("quantize", {})
    for precision in job.spec.get("quantization", []):
        key = f"tflite_{precision}"
        if precision == "float32" or key not in quantize.get("outputs", {}):
            continue
        out = quantize["outputs"][key]
        runtime = quantize.get("info", {}).get("runtime", "ai-edge-litert")
        toolchain = (quantize.get("metrics", {}).get(key) or {}).get("toolchain") or (chosen.name if chosen else None)
        entries.append(
            (
                _tflite_entry(
                    f"model_{precision}.tflite",
                    precision,
                    toolchain or "?",
                    out,
                    quantize.get("metrics", {}).get(key),
                    runtime,
                ),
                out["key"],
            )
        )
    return entries


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _attempts(job: Job, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every TFLite candidate: its provenance, numbers, and why it won, lost or failed."""
    spec = job.spec
    export = results.get("export_onnx", {})
    chosen = choose(spec, results)
    runs = {s.name: s for s in job.stages}
    attempts = []
    for candidate in collect(spec, results):
        convert_run = runs.get(f"convert_{slug(candidate.name)}")
        validate_run = runs.get(f"validate_{slug(candidate.name)}")
        convert = results.get(f"convert_{slug(candidate.name)}", {})
        info = convert.get("info", {})
        if chosen is not None and candidate.name == chosen.name:
            outcome = "chosen"
        elif convert_run is not None and convert_run.state == "failed":
            outcome = f"failed: {convert_run.error_code}: {convert_run.error_message}"
        elif (
            convert_run is not None
            and convert_run.state == "skipped"
            or (validate_run is not None and validate_run.state == "skipped")
        ):
            skipped = validate_run if validate_run is not None and validate_run.state == "skipped" else convert_run
            outcome = f"skipped: {(skipped.result or {}).get('skipped_reason', '')}" if skipped else "skipped"
        elif candidate.metrics is None:
            outcome = "not validated"
        elif candidate.requires_flex:
            outcome = "lost: needs Select-TF (flex) ops, which stock LiteRT cannot run"
        elif candidate.verdict != "pass":
            outcome = "lost: " + "; ".join(candidate.metrics.get("reasons") or [candidate.verdict])
        else:
            outcome = "lost: ranked lower (verdict, builtin-only, latency, error)"
        attempts.append(
            {
                "toolchain": candidate.name,
                "outcome": outcome,
                "chosen": outcome == "chosen",
                "verdict": candidate.verdict if candidate.metrics else None,
                "requires_flex": candidate.requires_flex if candidate.metrics else None,
                "latency_ms": (candidate.metrics or {}).get("latency_ms"),
                "runtime": validation(results, candidate.name).get("info", {}).get("runtime"),
                "max_abs_over_scale": _finite(candidate.error) if candidate.metrics else None,
                "size": (convert.get("outputs", {}).get("tflite_float32") or {}).get("size"),
                "operators": (candidate.metrics or {}).get("operators"),
                "transpose_count": (candidate.metrics or {}).get("transpose_count"),
                "convert_seconds": convert_run.seconds if convert_run else None,
                "converter": info.get("converter"),
                "exporter": export.get("info", {}).get("exporter") if slug(candidate.name) != "litert_torch" else None,
                "opset": export.get("info", {}).get("opset") if slug(candidate.name) != "litert_torch" else None,
                "export_attempts": export.get("info", {}).get("export_attempts"),
                "seed": spec.get("seed", 0),
                "versions": {**export.get("info", {}).get("versions", {}), **info.get("versions", {})},
                "lock_sha256": convert.get("lock_sha256"),
            }
        )
    return attempts


def build_report(job: Job) -> dict[str, Any]:
    results = _stage_results(job)
    export = results.get("export_onnx", {})
    info = export.get("info", {})
    spec = job.spec
    artifacts = [entry for entry, _ in build_artifacts(job, results)]
    reasons: list[str] = []
    produced = {entry["kind"] for entry in artifacts if entry["precision"] == "float32"}
    for target in spec.get("targets", []):
        if target not in produced:
            reasons.append(f"target {target!r} was not produced at float32")
    for entry in artifacts:
        if entry["precision"] == "float32" and entry["verdict"] != "pass":
            reasons.append(f"{entry['name']}: " + "; ".join(entry["reasons"] or [entry["verdict"]]))
    precisions = _precisions(job, results, artifacts)
    if spec.get("strict"):
        for precision, state in precisions.items():
            if state["status"] == "not_produced" or state.get("verdict") == "fail":
                reasons.append(f"{precision}: {state.get('reason') or state.get('verdict')} (strict)")
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
        # The spec's inputs, else those the export read from the upload (an ONNX graph's, a program's).
        "inputs": spec.get("inputs") or info.get("inputs") or [],
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
        "attempts": _attempts(job, results),
    }


def _precisions(
    job: Job, results: dict[str, dict[str, Any]], artifacts: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    by_precision = {e["precision"]: e for e in artifacts if e["kind"] == "tflite"}
    quantize_run = next((s for s in job.stages if s.name == "quantize"), None)
    failed = (results.get("quantize", {}).get("info") or {}).get("failed") or {}
    states: dict[str, dict[str, Any]] = {}
    for precision in job.spec.get("quantization", ["float32"]):
        entry = by_precision.get(precision)
        if entry is not None:
            states[precision] = {"status": "produced", "artifact": entry["name"], "verdict": entry["verdict"]}
        elif precision in failed:
            states[precision] = {"status": "not_produced", **failed[precision]}
        elif quantize_run is not None and quantize_run.state == "failed":
            states[precision] = {
                "status": "not_produced",
                "code": quantize_run.error_code,
                "reason": quantize_run.error_message,
            }
        elif quantize_run is not None and quantize_run.state == "skipped":
            states[precision] = {
                "status": "not_produced",
                "code": StageCode.NO_FLOAT32_CANDIDATE,
                "reason": (quantize_run.result or {}).get("skipped_reason"),
            }
        elif "tflite" not in job.spec.get("targets", []):
            states[precision] = {"status": "not_requested", "reason": "the targets do not include tflite"}
        else:
            states[precision] = {
                "status": "not_produced",
                "code": StageCode.PRECISION_UNAVAILABLE,
                "reason": f"no {precision} artifact was produced",
            }
    return states


def _outputs(info: dict[str, Any]) -> list[dict[str, Any]]:
    shapes = info.get("output_shapes") or {}
    names = info.get("output_names") or []
    if isinstance(shapes, dict):
        return [{"name": name, "shape": shapes.get(name)} for name in names]
    return [{"name": name, "shape": shape} for name, shape in zip(names, shapes, strict=False)]


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
        job.status = "failed"
        job.error_code, job.error_stage, tail, cause = _job_error(job, report)
        job.error_log_tail = tail or job.error_log_tail
        job.error_message = (
            cause
            + "; ".join(report["reasons"])
            + ". The artifacts and the report are kept: see GET /v1/jobs/{id}/report for every number."
        )
    session.flush()


def _job_error(job: Job, report: dict[str, Any]) -> tuple[str, str, str | None, str]:
    """Why a job whose report failed failed: ``(code, stage, log tail, cause)``, where
    ``cause`` is the failed stage's own message to put before the report's reasons.

    In order: a float32 artifact outside its tolerance; a requested target with no
    float32 artifact (the first failed stage's code: the one to act on, else
    ``target_missing``); a quantized precision that ``strict`` requires (its own
    not-produced code, or ``accuracy_check_failed`` when it was produced and failed).
    """
    artifacts = report["artifacts"]
    failing = next((a for a in artifacts if a["verdict"] != "pass" and a["precision"] == "float32"), None)
    if failing is not None:
        stage = {"onnx": "export_onnx", "saved_model": "convert_onnx_tf"}.get(
            failing["kind"], f"validate_{slug(failing['toolchain'])}"
        )
        return StageCode.ACCURACY_CHECK_FAILED, stage, None, ""
    produced = {a["kind"] for a in artifacts if a["precision"] == "float32"}
    if any(target not in produced for target in job.spec.get("targets", [])):
        failed_stage = next((s for s in job.stages if s.state == "failed"), None)
        if failed_stage is None:
            return StageCode.TARGET_MISSING, "report", None, ""
        tail = (failed_stage.result or {}).get("log_tail")
        cause = f"{failed_stage.name}: {failed_stage.error_message}. "
        return failed_stage.error_code or StageCode.STAGE_FAILED, failed_stage.name, tail, cause
    for state in report["precisions"].values():
        if state["status"] == "produced" and state.get("verdict") == "fail":
            return StageCode.ACCURACY_CHECK_FAILED, "quantize", None, ""
        if state["status"] == "not_produced":
            quantize = next((s for s in job.stages if s.name == "quantize"), None)
            tail = ((quantize.result or {}).get("log_tail") if quantize is not None else None) or None
            return state.get("code") or StageCode.PRECISION_UNAVAILABLE, "quantize", tail, ""
    return StageCode.TARGET_MISSING, "report", None, ""
