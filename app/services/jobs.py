"""Jobs: submission checks, creation, lookup and listing. Services flush; the caller commits."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.core.codes import ErrorCode
from app.core.errors import Conflict, InvalidRequest, NotFound
from domain import architectures
from domain.config import Settings
from domain.jobs.plan import CONVERTERS, Plan, SpecLike, candidates
from domain.jobs.states import FINAL, UNFINISHED, JobStatus, StageState
from domain.models import Job, StageRun
from domain.models.base import utcnow
from domain.webhooks import CallbackRefused, check_callback_url
from modelport.schemas.spec import JobSpec
from stages.kit.spec import PlanSpec

IMPLEMENTED_FORMATS = ("state_dict", "torchscript", "exported_program", "pickled_module", "onnx")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_spec(text: str | None) -> JobSpec:
    if text is None:
        raise InvalidRequest("the 'spec' form field (JSON) is required", code=ErrorCode.INVALID_SPEC)
    try:
        raw = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError, or an integer too long to convert
        raise InvalidRequest(f"'spec' is not valid JSON: {exc}", code=ErrorCode.INVALID_SPEC) from None
    if not isinstance(raw, dict):
        raise InvalidRequest("'spec' must be a JSON object", code=ErrorCode.INVALID_SPEC)
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        errors = [{"loc": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()]
        summary = "; ".join(f"{e['loc'] or 'spec'}: {e['message']}" for e in errors)
        raise InvalidRequest(f"the spec is invalid: {summary}", code=ErrorCode.INVALID_SPEC, errors=errors) from None


def resolve_format(declared: str, sniffed: str | None, *, pickled_module_enabled: bool = False) -> str:
    """The format to convert as, from the declared one and what the bytes say.

    ``pickled_module_enabled`` is the operator's ``MODELPORT_ENABLE_PICKLED_MODULE``.
    """
    if sniffed is None:
        raise InvalidRequest(
            "the model file is not a format ModelPort recognises (a torch.save state dict, "
            "safetensors, TorchScript, a torch.export archive or ONNX); check that the upload is complete",
            code=ErrorCode.UNRECOGNIZED_FORMAT,
        )
    actual = {"safetensors": "state_dict"}.get(sniffed, sniffed)
    if declared == "auto":
        # torch.save archives hold a state dict or a pickled module: only loading tells, and
        # the state-dict loader refuses anything but tensors. Whatever the server allows, only
        # an explicit `pickled_module` unpickles code.
        actual = "state_dict" if actual == "state_dict_or_module" else actual
    elif actual == "state_dict_or_module":
        if declared not in ("state_dict", "pickled_module"):
            raise InvalidRequest(
                f"model_format is {declared!r} but the file is a torch.save archive (a state dict or a pickled module)",
                code=ErrorCode.FORMAT_MISMATCH,
            )
        actual = declared
    elif declared != actual:
        raise InvalidRequest(
            f"model_format is {declared!r} but the file is {actual!r}; send model_format {actual!r} or 'auto'",
            code=ErrorCode.FORMAT_MISMATCH,
        )
    if actual == "pickled_module" and not pickled_module_enabled:
        raise InvalidRequest(
            "pickled modules run code when loaded and are disabled on this server; "
            "upload a state dict with an architecture instead",
            code=ErrorCode.FORMAT_DISABLED,
        )
    if actual not in IMPLEMENTED_FORMATS:
        raise InvalidRequest(
            f"{actual!r} uploads are not supported yet; upload a state dict (.pth) with an architecture",
            code=ErrorCode.FORMAT_NOT_SUPPORTED,
        )
    return actual


def check_spec(spec: JobSpec, model_format: str, settings: Settings) -> PlanSpec:
    """Everything that can be known before the job runs; returns the normalized spec
    (stored as its ``to_json()``)."""
    if model_format == "state_dict":
        if spec.architecture is None:
            raise InvalidRequest(
                'a state dict needs \'architecture\', e.g. {"name": "torchvision.models.resnet18"}',
                code=ErrorCode.ARCHITECTURE_REQUIRED,
            )
        allowed = settings.conversion.allowed_architectures
        if not any(spec.architecture.name.startswith(prefix) for prefix in allowed):
            raise InvalidRequest(
                f"architecture {spec.architecture.name!r} is not allowed here; allowed prefixes: {', '.join(allowed)}",
                code=ErrorCode.ARCHITECTURE_NOT_ALLOWED,
            )
        missing = architectures.unknown(spec.architecture.name)
        if missing is not None:
            raise InvalidRequest(
                f"{missing} (checked against the torchvision and transformers the torch toolchain pins)",
                code=ErrorCode.ARCHITECTURE_NOT_FOUND,
            )
    elif spec.architecture is not None:
        # Only a state dict is built from an architecture; echoing it in the report of an upload
        # that carries its own model would claim it played a part.
        raise InvalidRequest(
            f"'architecture' builds the model of a state dict; this upload is {model_format!r}, which "
            "carries its own model: drop 'architecture' from the spec",
            code=ErrorCode.UNSUPPORTED_OPTION,
        )
    if model_format in ("state_dict", "torchscript", "pickled_module") and not spec.inputs:
        # ONNX files and ExportedPrograms carry their signature; the others do not.
        raise InvalidRequest(
            f"a {model_format} upload needs 'inputs': the model's signature, e.g. "
            '[{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}]',
            code=ErrorCode.INPUTS_REQUIRED,
        )
    available = [name for name in CONVERTERS if name in settings.conversion.enabled_toolchains]
    if spec.toolchain not in ("auto", "best") and spec.toolchain not in available:
        raise InvalidRequest(
            f"toolchain {spec.toolchain!r} is not enabled on this server; enabled: "
            f"{', '.join(available) or 'none'} (or 'auto', 'best')",
            code=ErrorCode.TOOLCHAIN_UNAVAILABLE,
        )
    if "tflite" in spec.targets and not candidates(
        PlanSpec(toolchain=spec.toolchain, model_format=model_format, available_toolchains=tuple(available))
    ):
        raise InvalidRequest(
            f"toolchain {spec.toolchain!r} cannot convert {model_format!r} uploads to TFLite here "
            f"(litert-torch needs a PyTorch module); enabled: {', '.join(available)}",
            code=ErrorCode.TOOLCHAIN_UNAVAILABLE,
        )
    if spec.layout == "nhwc":
        # Only onnx2tf moves 4-D inputs to channel-last; the others keep PyTorch's layout.
        if "onnx2tf" not in available or spec.toolchain not in ("auto", "best", "onnx2tf"):
            raise InvalidRequest(
                "layout 'nhwc' is produced by the onnx2tf toolchain only; use toolchain 'auto' or 'onnx2tf'",
                code=ErrorCode.UNSUPPORTED_OPTION,
            )
        available = ["onnx2tf"]
    if spec.callback_url is not None:
        try:
            check_callback_url(spec.callback_url, settings.webhook.allowed_hosts)
        except CallbackRefused as exc:
            raise InvalidRequest(str(exc), code=ErrorCode.CALLBACK_URL_REFUSED) from None
    quantized = [p for p in spec.quantization if p != "float32"]
    if quantized and "tflite" not in spec.targets:
        raise InvalidRequest(
            f"quantization {quantized} applies to .tflite artifacts: add 'tflite' to targets",
            code=ErrorCode.UNSUPPORTED_OPTION,
        )
    if spec.validation_samples > settings.limits.max_validation_samples:
        raise InvalidRequest(
            f"validation_samples is limited to {settings.limits.max_validation_samples} here",
            code=ErrorCode.INVALID_SPEC,
        )
    normalized = spec.model_dump(mode="json")
    normalized.update(model_format=model_format, tolerance=spec.effective_tolerance(), available_toolchains=available)
    return PlanSpec.from_json(normalized)


def request_hash(spec_text: str, digests: dict[str, str]) -> str:
    material = json.dumps({"spec": json.loads(spec_text), "files": digests}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def create_job(
    session: Session,
    *,
    job_id: str,
    tenant: str,
    spec: SpecLike,
    model: dict[str, Any],
    inputs_key: str | None,
    calibration_key: str | None,
    idempotency_key: str | None,
    req_hash: str | None,
) -> Job:
    """A queued job with a pending run per stage of its plan; ``spec`` is stored as its JSON."""
    plan = Plan.of(spec)
    job = Job(
        id=job_id,
        tenant=tenant,
        status=JobStatus.QUEUED,
        stage=None,
        spec=plan.spec.to_json() if isinstance(spec, PlanSpec) else dict(spec),
        model_filename=model["filename"] if "filename" in model else None,
        model_key=model["key"],
        model_size=model["size"],
        model_sha256=model["sha256"],
        inputs_key=inputs_key,
        calibration_key=calibration_key,
        idempotency_key=idempotency_key,
        request_hash=req_hash,
    )
    job.stages = [
        StageRun(position=i, name=s.name, toolchain=s.toolchain, state=StageState.PENDING, attempts=0)
        for i, s in enumerate(plan.stages)
    ]
    session.add(job)
    session.flush()
    return job


def find_by_idempotency_key(session: Session, tenant: str, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant == tenant, Job.idempotency_key == key))


def get_job(session: Session, tenant: str, job_id: str) -> Job:
    try:
        uuid.UUID(job_id)
    except ValueError:
        raise NotFound(f"no job {job_id!r}: job ids are UUIDs", code=ErrorCode.JOB_NOT_FOUND) from None
    job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise NotFound(f"no job {job_id!r} for this API key", code=ErrorCode.JOB_NOT_FOUND)
    return job


def error_summary(job: Job) -> dict[str, str | None] | None:
    """The job's failure as ``{code, stage}``, or None when it did not fail."""
    if not job.error_code:
        return None
    return {"code": job.error_code, "stage": job.error_stage}


def outcome_sentence(job: Job) -> str:
    """One sentence on where the job stands, for the detail of a problem about its files.

    Says whether waiting helps: a finished job will produce nothing more.
    """
    if job.status not in FINAL:
        return f"The job is {job.status}: its files appear as its stages finish."
    verb = "was cancelled" if job.status == JobStatus.CANCELLED else job.status
    failure = f" with {job.error_code} at stage {job.error_stage}" if job.error_code else ""
    return f"The job {verb}{failure} and will produce nothing more; see GET /v1/jobs/{job.id}."


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, job_id = base64.urlsafe_b64decode(padded).decode().split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(
            "the cursor is invalid; use next_cursor from a previous page", code=ErrorCode.INVALID_CURSOR
        ) from None


def list_jobs(
    session: Session, tenant: str, *, status: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    query = select(Job).where(Job.tenant == tenant)
    if status:
        query = query.where(Job.status == status)
    if cursor:
        created, job_id = _decode_cursor(cursor)
        query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)))
    jobs = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    next_cursor = _encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return jobs[:limit], next_cursor


def cancel_job(session: Session, job: Job) -> Job:
    if job.status in FINAL:
        raise Conflict(f"job has already finished ({job.status})", code=ErrorCode.JOB_FINISHED)
    job.status = JobStatus.CANCELLED
    job.finished_at = utcnow()
    for stage in job.stages:
        if stage.state in UNFINISHED:
            stage.state = StageState.CANCELLED
    session.flush()
    return job
