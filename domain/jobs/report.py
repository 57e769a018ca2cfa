"""The accuracy report and the job's final verdict, assembled from the stages' results.

No framework here: the stages measured everything; this module arranges their numbers
(the artifact entries in ``domain.jobs.entries``), applies the rules of DESIGN's
"Verdicts", registers the artifacts and ends the job. docs/report.md describes the JSON;
``modelport.schemas.report.Report`` is its model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from domain.jobs import names
from domain.jobs.entries import build_artifacts, stage_of_failing
from domain.jobs.plan import CONVERTERS
from domain.jobs.records import NOTHING, Records
from domain.jobs.saved_models import missing_targets, saved_model_attempts, tflite_outcome
from domain.jobs.selection import choose, collect
from domain.jobs.states import JobStatus, StageState
from domain.models import Artifact, Job, StageRun
from domain.models.base import utcnow
from domain.storage import ObjectStore
from stages.kit.codes import StageCode
from stages.kit.fields import finite_json
from stages.kit.results import ConvertInfo, ExportInfo, QuantizeInfo, RunNote, ValidateInfo
from stages.kit.spec import PlanSpec

REPORT_VERSION = 2
MEDIA_TYPES = {
    "onnx": "application/onnx",
    "saved_model": "application/zip",
    "tflite": "application/vnd.tflite",
}


@dataclass(frozen=True)
class PrecisionState:
    """A requested precision: ``produced`` (its artifact and verdict), ``not_produced`` (a
    code and reason) or ``not_requested`` (a reason)."""

    status: str
    artifact: str | None = None
    verdict: str | None = None
    code: str | None = None
    reason: str | None = None
    attempts: list[dict[str, Any]] | None = None  # the quantize stage's, when it made any

    def to_json(self) -> dict[str, Any]:
        tried = {"attempts": self.attempts} if self.attempts else {}
        if self.status == "produced":
            return {"status": self.status, "artifact": self.artifact, "verdict": self.verdict, **tried}
        if self.status == "not_produced":
            return {"status": self.status, "code": self.code, "reason": self.reason, **tried}
        return {"status": self.status, "reason": self.reason}


def _outcome(run: StageRun | None, validate_run: StageRun | None) -> str | None:
    """A candidate that failed or was skipped: ``failed: code: message``, ``skipped: why``."""
    if run is not None and run.state == StageState.FAILED:
        return f"failed: {run.error_code}: {run.error_message}"
    skipped = next((r for r in (validate_run, run) if r is not None and r.state == StageState.SKIPPED), None)
    if skipped is not None:
        return f"skipped: {RunNote.from_json(skipped.result).skipped_reason or ''}"
    return None


def _attempts(job: Job, spec: PlanSpec, records: Records) -> list[dict[str, Any]]:
    """Every TFLite candidate: its provenance, numbers, and why it won, lost or failed."""
    provenance = records.export.info_as(ExportInfo)
    chosen = choose(spec, records)
    runs = {s.name: s for s in job.stages}
    attempts = []
    for candidate in collect(spec, records):
        convert_run = runs.get(names.convert(candidate.name))
        convert = records.convert(candidate.name) or NOTHING
        info = convert.info_as(ConvertInfo)
        check = candidate.metrics
        out = convert.output("tflite_float32")
        via_onnx = CONVERTERS[candidate.name].source == "onnx"  # the export's provenance applies
        if chosen is not None and candidate.name == chosen.name:
            outcome = "chosen"
        elif (kept_saved_model := tflite_outcome(records.convert(candidate.name))) is not None:
            outcome = kept_saved_model  # the convert stage succeeded for its SavedModel alone
        elif (ended := _outcome(convert_run, runs.get(names.validate(candidate.name)))) is not None:
            outcome = ended
        elif check is None:
            outcome = "not validated"
        elif candidate.requires_flex:
            outcome = "lost: needs Select-TF (flex) ops, which stock LiteRT cannot run"
        elif candidate.verdict != "pass":
            outcome = "lost: " + "; ".join(check.reasons or [candidate.verdict])
        elif candidate.frozen and chosen is not None and not chosen.frozen:
            outcome = "lost: " + "; ".join(check.reasons or ["fixes a dimension the spec declares dynamic"])
        else:
            outcome = "lost: ranked lower (verdict, builtin-only, dynamic dimensions kept, latency, error)"
        attempts.append(
            {
                "toolchain": candidate.name,
                "outcome": outcome,
                "chosen": outcome == "chosen",
                "verdict": candidate.verdict if check else None,
                "requires_flex": candidate.requires_flex if check else None,
                "latency_ms": check.latency_ms if check else None,
                "runtime": records.validation(candidate.name).info_as(ValidateInfo).runtime,
                "max_abs_over_scale": candidate.error if check else None,  # inf -> null: finite_json
                "reasons": list(check.reasons or []) if check else [],
                "size": out.size if out is not None else None,
                "operators": check.operators if check else None,
                "transpose_count": check.transpose_count if check else None,
                "convert_seconds": convert_run.seconds if convert_run else None,
                "converter": info.converter,
                "exporter": provenance.exporter if via_onnx else None,
                "opset": provenance.opset if via_onnx else None,
                "export_attempts": provenance.export_attempts,
                "seed": spec.seed,
                "versions": {**provenance.versions, **info.versions},
                "lock_sha256": convert.lock_sha256,
            }
        )
    return attempts


def _precisions(
    job: Job, spec: PlanSpec, records: Records, artifacts: list[dict[str, Any]]
) -> dict[str, PrecisionState]:
    by_precision = {e["precision"]: e for e in artifacts if e["kind"] == "tflite"}
    quantize_run = next((s for s in job.stages if s.name == names.QUANTIZE), None)
    info = records.quantize.info_as(QuantizeInfo)
    failed = info.failed
    states: dict[str, PrecisionState] = {}
    for precision in spec.quantization:
        entry = by_precision[precision] if precision in by_precision else None
        tried = info.attempts[precision] if precision in info.attempts else None
        if entry is not None:
            states[precision] = PrecisionState(
                "produced", artifact=entry["name"], verdict=entry["verdict"], attempts=tried
            )
        elif precision in failed:
            why = failed[precision]
            states[precision] = PrecisionState("not_produced", code=why["code"], reason=why["reason"], attempts=tried)
        elif quantize_run is not None and quantize_run.state == StageState.FAILED:
            states[precision] = PrecisionState(
                "not_produced", code=quantize_run.error_code, reason=quantize_run.error_message
            )
        elif quantize_run is not None and quantize_run.state == StageState.SKIPPED:
            reason = RunNote.from_json(quantize_run.result).skipped_reason
            states[precision] = PrecisionState("not_produced", code=StageCode.NO_FLOAT32_CANDIDATE, reason=reason)
        elif "tflite" not in spec.targets:
            states[precision] = PrecisionState("not_requested", reason="the targets do not include tflite")
        else:
            states[precision] = PrecisionState(
                "not_produced", code=StageCode.PRECISION_UNAVAILABLE, reason=f"no {precision} artifact was produced"
            )
    return states


def _reasons(spec: PlanSpec, artifacts: list[dict[str, Any]], precisions: dict[str, PrecisionState]) -> list[str]:
    """Why the job fails (none: it passes)."""
    reasons: list[str] = []
    produced = {entry["kind"] for entry in artifacts if entry["precision"] == "float32"}
    reasons += [f"target {target!r} was not produced at float32" for target in spec.targets if target not in produced]
    for entry in artifacts:
        if entry["precision"] == "float32" and entry["verdict"] != "pass":
            reasons.append(f"{entry['name']}: " + "; ".join(entry["reasons"] or [entry["verdict"]]))
    if spec.strict:
        missed = {entry["name"]: entry.get("reasons") or [] for entry in artifacts}
        for precision, state in precisions.items():
            if state.status == "not_produced":
                reasons.append(f"{precision}: {state.reason} (strict)")
            elif state.verdict == "fail":
                # Produced but failing: the artifact's own words (which output, which number).
                why = "; ".join(missed.get(state.artifact or "", [])[:2])
                reasons.append(f"{precision}: fail{': ' + why if why else ''} (strict)")
    return reasons


def _report(
    job: Job, spec: PlanSpec, records: Records, artifacts: list[dict[str, Any]], precisions: dict[str, PrecisionState]
) -> dict[str, Any]:
    # Strict JSON (the API and report.json refuse NaN/Infinity), whatever a stage measured.
    return finite_json(_report_fields(job, spec, records, artifacts, precisions))


def _report_fields(
    job: Job, spec: PlanSpec, records: Records, artifacts: list[dict[str, Any]], precisions: dict[str, PrecisionState]
) -> dict[str, Any]:
    reasons = _reasons(spec, artifacts, precisions)
    export = records.export
    info = export.info_as(ExportInfo)
    check = export.check("onnx")
    samples_source = "uploaded" if job.inputs_key else f"synthetic (seed {spec.seed})"
    return {
        "report_version": REPORT_VERSION,
        "job_id": job.id,
        "generated_at": utcnow().isoformat(),
        "verdict": "pass" if not reasons else "fail",
        "reasons": reasons,
        "model": {
            "format": spec.model_format,
            "filename": job.model_filename,
            "size": job.model_size,
            "sha256": job.model_sha256,
            "architecture": spec.architecture.to_json() if spec.architecture is not None else None,
            "parameters": info.parameters,
        },
        "reference": {"runtime": info.reference_runtime, "versions": info.versions},
        "validation": {
            "samples": check.samples if check is not None else None,
            "source": samples_source,
            "tolerance": spec.tolerance,
            "probes": info.probes,
        },
        # The spec's inputs, else those the export read from the upload (an ONNX graph's, a program's).
        "inputs": [item.to_json() for item in spec.inputs] or info.inputs or [],
        "outputs": info.outputs(),
        "artifacts": artifacts,
        "precisions": {precision: state.to_json() for precision, state in precisions.items()},
        "stages": [
            {
                "name": s.name,
                "toolchain": s.toolchain,
                "state": s.state,
                "seconds": s.seconds,
                "attempts": s.attempts,
                "peak_rss_bytes": RunNote.from_json(s.result).peak_rss_bytes,
                "isolation": RunNote.from_json(s.result).isolation,
                "process_seconds": RunNote.from_json(s.result).process_seconds,
                "startup_seconds": RunNote.from_json(s.result).startup_seconds,
            }
            for s in job.stages
        ],
        "attempts": _attempts(job, spec, records),
        "saved_model_attempts": saved_model_attempts(job, spec, records),
    }


def build_report(job: Job) -> dict[str, Any]:
    """The report of a job whose stages are over (see docs/report.md)."""
    spec = PlanSpec.from_json(job.spec)
    records = Records.of_runs(job.stages)
    artifacts = [entry for entry, _ in build_artifacts(spec, records)]
    return _report(job, spec, records, artifacts, _precisions(job, spec, records, artifacts))


def finish_job(session: Session, store: ObjectStore, job: Job) -> None:
    """Write the report, register the artifacts, and give the job its final status."""
    spec = PlanSpec.from_json(job.spec)
    records = Records.of_runs(job.stages)
    entries = build_artifacts(spec, records)
    artifacts = [entry for entry, _ in entries]
    precisions = _precisions(job, spec, records, artifacts)
    report = _report(job, spec, records, artifacts, precisions)
    key = f"jobs/{job.id}/report.json"
    writer = store.open_writer(key)
    writer.write(json.dumps(report, indent=2, allow_nan=False).encode())
    writer.commit()
    job.report_key = key
    existing = {a.name for a in job.artifacts}
    for entry, object_key in entries:
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
        job.status = JobStatus.SUCCEEDED
    else:
        job.status = JobStatus.FAILED
        job.error_code, job.error_stage, tail, cause = _job_error(job, spec, artifacts, precisions)
        job.error_log_tail = tail or job.error_log_tail
        missing, code, stage = missing_targets(job, spec, records, artifacts, report["attempts"])
        if missing and job.error_code != StageCode.ACCURACY_CHECK_FAILED:
            # Per missing target, each candidate that tried it and why; what passed; what to change.
            job.error_code, job.error_stage = code or job.error_code, stage or job.error_stage
            cause = missing + "\n"
        job.error_message = (
            cause
            + "; ".join(report["reasons"])
            + ". The artifacts and the report are kept: see GET /v1/jobs/{id}/report for every number."
        )
    session.flush()


def _job_error(
    job: Job, spec: PlanSpec, artifacts: list[dict[str, Any]], precisions: dict[str, PrecisionState]
) -> tuple[str, str, str | None, str]:
    """Why a job whose report failed failed: ``(code, stage, log tail, cause)``, where
    ``cause`` is the failed stage's own message to put before the report's reasons.

    In order: a float32 artifact outside its tolerance; a requested target with no
    float32 artifact (the first failed stage's code: the one to act on, else
    ``target_missing``); a quantized precision that ``strict`` requires (its own
    not-produced code, or ``accuracy_check_failed`` when it was produced and failed).
    """
    failing = next((a for a in artifacts if a["verdict"] != "pass" and a["precision"] == "float32"), None)
    if failing is not None:
        return StageCode.ACCURACY_CHECK_FAILED, stage_of_failing(failing), None, ""
    produced = {a["kind"] for a in artifacts if a["precision"] == "float32"}
    if any(target not in produced for target in spec.targets):
        failed_stage = next((s for s in job.stages if s.state == StageState.FAILED), None)
        if failed_stage is None:
            return StageCode.TARGET_MISSING, names.REPORT, None, ""
        tail = RunNote.from_json(failed_stage.result).log_tail
        cause = f"{failed_stage.name}: {failed_stage.error_message}. "
        return failed_stage.error_code or StageCode.STAGE_FAILED, failed_stage.name, tail, cause
    for state in precisions.values():
        if state.status == "produced" and state.verdict == "fail":
            return StageCode.ACCURACY_CHECK_FAILED, names.QUANTIZE, None, ""
        if state.status == "not_produced":
            quantize = next((s for s in job.stages if s.name == names.QUANTIZE), None)
            tail = (RunNote.from_json(quantize.result).log_tail if quantize is not None else None) or None
            return state.code or StageCode.PRECISION_UNAVAILABLE, names.QUANTIZE, tail, ""
    return StageCode.TARGET_MISSING, names.REPORT, None, ""
