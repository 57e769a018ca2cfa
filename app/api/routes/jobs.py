from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from app.api.deps import CallerDep, SessionDep, SettingsDep, StoreDep, after_commit
from app.api.presenters import artifact_out, job_out
from app.core.errors import Conflict, NotFound
from app.schemas.job import ArtifactOut, JobOut, JobPage, JobStatus
from app.schemas.problem import problem_responses
from app.services import jobs, submission
from worker.enqueue import enqueue_stage

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model", "spec"],
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
    responses=problem_responses(400, 401, 409, 413, 415, 422),
    summary="Submit a conversion job",
)
async def create_job(
    request: Request,
    caller: CallerDep,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> Response:
    result = await submission.submit(
        request,
        session,
        store,
        settings,
        tenant=caller.tenant,
        idempotency_key=idempotency_key,
        redis=request.app.state.redis,
    )
    job = result.job
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if result.replayed and job.creation_response:
        headers["Idempotent-Replayed"] = "true"
        return Response(job.creation_response, status_code=202, media_type="application/json", headers=headers)
    body = job_out(job).model_dump_json()
    job.creation_response = body
    first = job.stages[0]
    request_id = request.headers.get("X-Request-ID")
    after_commit(session, lambda: enqueue_stage(job.id, first.name, first.toolchain, request_id=request_id))
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


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(401, 404), summary="A job's state")
def get_job(job_id: str, caller: CallerDep, session: SessionDep) -> JobOut:
    return job_out(jobs.get_job(session, caller.tenant, job_id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses=problem_responses(401, 404, 409),
    summary="Cancel a queued or running job",
)
def cancel_job(job_id: str, caller: CallerDep, session: SessionDep) -> JobOut:
    job = jobs.cancel_job(session, jobs.get_job(session, caller.tenant, job_id))
    return job_out(job)


@router.get(
    "/{job_id}/artifacts",
    response_model=list[ArtifactOut],
    responses=problem_responses(401, 404),
    summary="The job's artifacts",
)
def list_artifacts(job_id: str, caller: CallerDep, session: SessionDep) -> list[ArtifactOut]:
    job = jobs.get_job(session, caller.tenant, job_id)
    return [artifact_out(a) for a in job.artifacts]


@router.get(
    "/{job_id}/artifacts/{name}",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The artifact's bytes"},
        **problem_responses(401, 404),
    },
    response_class=StreamingResponse,
    summary="Download an artifact",
)
def download_artifact(
    job_id: str, name: str, caller: CallerDep, session: SessionDep, store: StoreDep
) -> StreamingResponse:
    job = jobs.get_job(session, caller.tenant, job_id)
    artifact = next((a for a in job.artifacts if a.name == name), None)
    if artifact is None:
        names = ", ".join(a.name for a in job.artifacts) or "none yet"
        raise NotFound(f"job has no artifact {name!r}; it has: {names}", code="artifact_not_found")
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
    responses=problem_responses(401, 404, 409),
    summary="The accuracy and performance report (JSON)",
)
def get_report(job_id: str, caller: CallerDep, session: SessionDep, store: StoreDep) -> JSONResponse:
    job = jobs.get_job(session, caller.tenant, job_id)
    if not job.report_key:
        raise Conflict(f"the report is written when the job finishes; the job is {job.status}", code="report_not_ready")
    return Response(store.read_bytes(job.report_key), media_type="application/json")  # type: ignore[return-value]


@router.get(
    "/{job_id}/logs/{stage}",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 404)},
    summary="A stage's log",
)
def get_stage_log(job_id: str, stage: str, caller: CallerDep, session: SessionDep, store: StoreDep) -> Response:
    job = jobs.get_job(session, caller.tenant, job_id)
    run = next((s for s in job.stages if s.name == stage), None)
    if run is None or not run.log_key or not store.exists(run.log_key):
        raise NotFound(f"no log for stage {stage!r} of this job", code="log_not_found")
    return Response(store.read_bytes(run.log_key), media_type="text/plain; charset=utf-8")
