from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from celery import Celery
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.api import uploads
from app.api.deps import CallerDep, CeleryDep, SessionDep, SettingsDep, StoreDep, WritesDep
from app.api.presenters import artifact_out, job_out
from app.api.problems import problem_responses
from app.api.request_id import request_id_of
from app.core.codes import ErrorCode
from app.core.errors import Conflict, Expired, NotFound
from app.services import jobs, submission
from domain.config import Settings
from domain.db import after_commit, session_scope
from domain.jobs.states import FINAL, UNFINISHED
from domain.models.base import as_utc
from domain.storage import ObjectStore
from modelport.schemas.job import ArtifactOut, JobOut, JobPage, JobStatus
from modelport.schemas.report import Report
from worker.celery_app import enqueue_stage

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model", "spec"],
                    "additionalProperties": False,  # another field is refused (unknown_field)
                    "properties": {
                        "model": {
                            "type": "string",
                            "format": "binary",
                            "description": "The model file (.pth state dict, ...)",
                        },
                        "spec": {"type": "string", "description": "The job spec, JSON (see docs/api.md)"},
                        "inputs": {
                            "type": "string",
                            "format": "binary",
                            "description": "Validation samples: .npy (one input) or .npz by input name",
                        },
                        "model_sha256": {
                            "type": "string",
                            "description": "Optional sha256 (hex) of the model file, checked on arrival",
                        },
                        "calibration": {
                            "type": "string",
                            "format": "binary",
                            "description": "Calibration samples for int8: .npy or .npz",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra=MULTIPART_BODY,
    responses=problem_responses(400, 401, 409, 413, 415, 422, 503),
    summary="Submit a conversion job",
)
async def create_job(
    request: Request,
    caller: CallerDep,
    writes: WritesDep,
    store: StoreDep,
    settings: SettingsDep,
    celery: CeleryDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> Response:
    # The body streams in on the event loop; everything after it, in one worker thread.
    async with uploads.receive(
        request,
        request.app.state.sessions,
        store,
        settings,
        tenant=caller.tenant,
        idempotency_key=idempotency_key,
        redis=request.app.state.redis,
    ) as upload:
        return await run_in_threadpool(
            _accept, writes, store, settings, celery, upload, caller.tenant, idempotency_key, request_id_of(request)
        )


def _accept(
    writes: sessionmaker[Session],
    store: ObjectStore,
    settings: Settings,
    celery: Celery,
    upload: submission.Upload,
    tenant: str,
    idempotency_key: str | None,
    request_id: str | None,
) -> Response:
    """The submission's database work as one short write transaction in this thread:
    the job row and its creation response, the commit, then the first stage's enqueue."""
    with session_scope(writes) as session:
        result = submission.accept(session, store, settings, upload, tenant=tenant, idempotency_key=idempotency_key)
        job = result.job
        headers = {"Location": f"/v1/jobs/{job.id}"}
        if result.replayed and job.creation_response:
            headers["Idempotent-Replayed"] = "true"
            return Response(job.creation_response, status_code=202, media_type="application/json", headers=headers)
        body = job_out(job).model_dump_json()
        job.creation_response = body
        first = job.stages[0]
        # The row keeps the id for the stages the reconciler sends again.
        job.request_id = request_id
        after_commit(
            session,
            lambda: enqueue_stage(celery, settings, job.id, first.name, first.toolchain, request_id=request_id),
        )
    return Response(body, status_code=202, media_type="application/json", headers=headers)


@router.get("", response_model=JobPage, responses=problem_responses(401, 422), summary="List jobs, newest first")
def list_jobs(
    caller: CallerDep,
    session: SessionDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobPage:
    items, next_cursor = jobs.list_jobs(session, caller.tenant, status=status, limit=limit, cursor=cursor)
    return JobPage(items=[job_out(j) for j in items], next_cursor=next_cursor, limit=limit)


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(401, 404, 422), summary="A job's state")
def get_job(job_id: str, caller: CallerDep, session: SessionDep) -> JobOut:
    return job_out(jobs.get_job(session, caller.tenant, job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses=problem_responses(401, 404, 409, 422, 503),
    summary="Cancel a queued or running job",
)
def cancel_job(job_id: str, caller: CallerDep, writes: WritesDep) -> JobOut:
    with session_scope(writes) as session:
        job = jobs.cancel_job(session, jobs.get_job(session, caller.tenant, job_id))
        return job_out(job)


@router.get(
    "/{job_id}/artifacts",
    response_model=list[ArtifactOut],
    responses=problem_responses(401, 404, 422),
    summary="The job's artifacts",
)
def list_artifacts(job_id: str, caller: CallerDep, session: SessionDep) -> list[ArtifactOut]:
    job = jobs.get_job(session, caller.tenant, job_id)
    return [artifact_out(a) for a in job.artifacts]


def _expired_detail(what: str, expired_at: datetime | None, settings: Settings) -> str:
    when = f"on {as_utc(expired_at).isoformat()}" if expired_at else "already"
    why = (
        f"the files of a finished job are kept for {settings.retention.hours:g} hours (MODELPORT_RETENTION_HOURS)"
        if settings.retention.hours
        else "its file is no longer in the object store"
    )
    return f"{what} was removed {when}: {why}; submit the job again to rebuild it"


@router.get(
    "/{job_id}/artifacts/{name}",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The artifact's bytes"},
        **problem_responses(401, 404, 422, 410),
    },
    response_class=StreamingResponse,
    summary="Download an artifact",
)
def download_artifact(
    job_id: str, name: str, caller: CallerDep, session: SessionDep, store: StoreDep, settings: SettingsDep
) -> StreamingResponse:
    job = jobs.get_job(session, caller.tenant, job_id)
    artifact = next((a for a in job.artifacts if a.name == name), None)
    if artifact is None:
        names = ", ".join(a.name for a in job.artifacts) or "none"
        raise NotFound(
            f"job has no artifact {name!r}; it has: {names}. {jobs.outcome_sentence(job)}",
            code=ErrorCode.ARTIFACT_NOT_FOUND,
            job_status=job.status,
        )
    # A missing file without expired_at is a sweep between deleting and marking: expired too.
    expired_at = artifact.expired_at or job.expired_at
    if expired_at is not None or not store.exists(artifact.object_key):
        raise Expired(
            _expired_detail(f"artifact {name!r}", expired_at, settings),
            code=ErrorCode.ARTIFACT_EXPIRED,
            expired_at=as_utc(expired_at).isoformat() if expired_at else None,
        )
    return StreamingResponse(
        store.iter_chunks(artifact.object_key),
        media_type=artifact.media_type,
        headers={
            "Content-Length": str(artifact.size),
            "Content-Disposition": f'attachment; filename="{artifact.name}"',
            "ETag": f'"{artifact.sha256}"',
            "X-Checksum-SHA256": artifact.sha256,
        },
    )


@router.get(
    "/{job_id}/report",
    response_model=Report,
    responses=problem_responses(401, 404, 409, 422, 410),
    summary="The accuracy and performance report (JSON)",
)
def get_report(job_id: str, caller: CallerDep, session: SessionDep, store: StoreDep, settings: SettingsDep) -> Response:
    """The stored report, byte for byte (``Report`` documents it; docs/report.md explains it)."""
    job = jobs.get_job(session, caller.tenant, job_id)
    if job.expired_at is not None or (job.report_key and not store.exists(job.report_key)):
        raise Expired(
            _expired_detail("the report", job.expired_at, settings),
            code=ErrorCode.REPORT_EXPIRED,
            expired_at=as_utc(job.expired_at).isoformat() if job.expired_at else None,
        )
    if not job.report_key:
        if job.status in FINAL:
            # A final answer: a client waiting for the report must stop waiting.
            raise NotFound(
                f"no report was produced: {jobs.outcome_sentence(job)}",
                code=ErrorCode.REPORT_NOT_PRODUCED,
                job_status=job.status,
                job_error=jobs.error_summary(job),
            )
        raise Conflict(
            f"the report is written when the job finishes; the job is {job.status}: retry later",
            code=ErrorCode.REPORT_NOT_READY,
            job_status=job.status,
        )
    return Response(store.read_bytes(job.report_key), media_type="application/json")


@router.get(
    "/{job_id}/logs/{stage}",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 404, 409, 422)},
    summary="A stage's log",
)
def get_stage_log(job_id: str, stage: str, caller: CallerDep, session: SessionDep, store: StoreDep) -> Response:
    job = jobs.get_job(session, caller.tenant, job_id)
    run = next((s for s in job.stages if s.name == stage), None)
    if run is None:
        names = ", ".join(s.name for s in job.stages)
        raise NotFound(f"this job has no stage {stage!r}; its stages are: {names}", code=ErrorCode.LOG_NOT_FOUND)
    if run.log_key and store.exists(run.log_key):
        return Response(store.read_bytes(run.log_key), media_type="text/plain; charset=utf-8")
    if job.status not in FINAL and run.state in UNFINISHED:
        raise Conflict(
            f"stage {stage!r} is {run.state}: its log is stored when it ends; retry later",
            code=ErrorCode.LOG_NOT_READY,
            stage_state=run.state,
        )
    if run.log_key:
        why = "removed under the retention policy" if job.expired_at else "its file is no longer in the object store"
    else:
        why = f"the stage is {run.state} and stored none"
    raise NotFound(
        f"no log for stage {stage!r}: {why}. {jobs.outcome_sentence(job)}",
        code=ErrorCode.LOG_NOT_FOUND,
        stage_state=run.state,
    )
