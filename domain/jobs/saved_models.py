"""The report's SavedModel attempts, and the message of a job that misses a target.

``saved_model_attempts`` lists every SavedModel candidate like ``report.attempts`` lists
the .tflite ones: how it ended (``chosen``, ``lost: ...``, ``failed: code: message``,
``skipped: ...``), its numbers and provenance. ``missing_targets`` explains a job whose
requested target has no float32 artifact: per missing target one line per candidate that
tried it and why, the targets that did pass, and what to change.
"""

from __future__ import annotations

from typing import Any

from domain.jobs import names
from domain.jobs.records import NOTHING, Records
from domain.jobs.selection import choose_saved_model, collect_saved_models, tflite_failure
from domain.jobs.states import StageState
from domain.models import Job, StageRun
from stages.kit.fields import nested
from stages.kit.results import ConvertInfo, ExportInfo, RunNote
from stages.kit.spec import PlanSpec


def _ended(run: StageRun | None) -> str | None:
    if run is not None and run.state == StageState.FAILED:
        return f"failed: {run.error_code}: {run.error_message}"
    if run is not None and run.state == StageState.SKIPPED:
        return f"skipped: {RunNote.from_json(run.result).skipped_reason or ''}"
    return None


def saved_model_attempts(job: Job, spec: PlanSpec, records: Records) -> list[dict[str, Any]]:
    """Every SavedModel candidate: its outcome, numbers and provenance (docs/report.md)."""
    provenance = records.export.info_as(ExportInfo)
    chosen = choose_saved_model(spec, records)
    runs = {s.name: s for s in job.stages}
    attempts = []
    for candidate in collect_saved_models(spec, records):
        run = runs.get(names.convert(candidate.name))
        convert = records.convert(candidate.name) or NOTHING
        check = candidate.metrics
        out = convert.output("saved_model")
        if chosen is not None and candidate.name == chosen.name:
            outcome = "chosen"
        elif (ended := _ended(run)) is not None:
            outcome = ended
        elif candidate.failure is not None:
            outcome = f"failed: {candidate.failure.get('code')}: {candidate.failure.get('reason')}"
        elif check is None:
            outcome = "not validated"
        elif candidate.verdict != "pass":
            outcome = "lost: " + "; ".join(check.reasons or [candidate.verdict])
        else:
            outcome = "lost: ranked lower (verdict, error)"
        info = convert.info_as(ConvertInfo)
        attempts.append(
            {
                "toolchain": candidate.name,
                "outcome": outcome,
                "chosen": outcome == "chosen",
                "verdict": candidate.verdict if check else None,
                "runtime": _runtime(convert.info) if check else None,
                "max_abs_over_scale": candidate.error if check else None,  # inf -> null: finite_json
                "reasons": list(check.reasons or []) if check else [],
                "size": out.size if out is not None else None,
                "signature": nested(convert.info, "saved_model", "signature") or nested(convert.info, "signature"),
                "convert_seconds": run.seconds if run else None,
                "converter": info.converter,
                "exporter": provenance.exporter,
                "opset": provenance.opset,
                "seed": spec.seed,
                "versions": {**provenance.versions, **info.versions},
                "lock_sha256": convert.lock_sha256,
            }
        )
    return attempts


def _runtime(info: dict[str, Any]) -> str:
    version = nested(info, "versions", "tensorflow") or nested(info, "saved_model", "tensorflow") or "?"
    return f"tensorflow {version} (serving_default)"


def missing_targets(
    job: Job, spec: PlanSpec, records: Records, artifacts: list[dict[str, Any]], tflite_attempts: list[dict[str, Any]]
) -> tuple[str, str | None, str | None]:
    """``(message, code, stage)`` for a job with a requested target no candidate produced
    at float32; ``("", None, None)`` when every target has an artifact.

    ``code`` / ``stage`` are those of the first candidate failure behind a missing
    target (e.g. ``tflite_conversion_failed`` at ``convert_onnx_tf``), None when no
    candidate failed (each was skipped or not validated).
    """
    produced = {entry["kind"]: entry for entry in artifacts if entry["precision"] == "float32"}
    missing = [target for target in spec.targets if target not in produced]
    if not missing:
        return "", None, None
    runs = {s.name: s for s in job.stages}
    lines: list[str] = []
    code: str | None = None
    stage: str | None = None
    for target in missing:
        tried = _tried(target, job, spec, records, tflite_attempts)
        lines.append(f"target {target!r} was not produced:" + ("" if tried else " no toolchain could try it"))
        for toolchain, why in tried:
            lines.append(f"- {toolchain}: {why}")
            if code is None and why.startswith("failed: "):
                code = why.split(": ", 2)[1]
                stage = names.convert(toolchain)
                validate = runs.get(names.validate(toolchain))
                if target == "tflite" and validate is not None and validate.state == StageState.FAILED:
                    stage = validate.name
    passed = [f"{kind} ({entry['name']} from {entry['toolchain']})" for kind, entry in produced.items()]
    if passed:
        lines.append("Produced and checked: " + ", ".join(passed) + ".")
        drop = ", ".join(repr(target) for target in missing)
        lines.append(f"To get those, submit again without {drop} in targets, or with another toolchain.")
    return "\n".join(lines), code, stage


def _tried(
    target: str, job: Job, spec: PlanSpec, records: Records, tflite_attempts: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    if target == "tflite":
        return [(attempt["toolchain"], attempt["outcome"]) for attempt in tflite_attempts]
    if target == "saved_model":
        return [(attempt["toolchain"], attempt["outcome"]) for attempt in saved_model_attempts(job, spec, records)]
    export = next((s for s in job.stages if s.name == names.EXPORT), None)
    return [("torch", _ended(export) or "no ONNX file was kept")]


def tflite_outcome(convert: Any) -> str | None:
    """``failed: code: reason`` for a converter that kept its SavedModel but made no .tflite."""
    why = tflite_failure(convert) if convert is not None else None
    return f"failed: {why}" if why else None
