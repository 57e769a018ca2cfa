"""``GET /v1/jobs/{id}/events``: live progress as server-sent events (docs/api.md)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api import job_events
from app.api.deps import CallerDep, SessionDep
from app.api.presenters import job_out
from app.api.problems import problem_responses
from app.services import jobs

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

EVENT_STREAM = "text/event-stream"


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {EVENT_STREAM: {"schema": {"type": "string"}}},
            "description": "`job` events (the job resource, as GET /v1/jobs/{id}) on every change, "
            "then one `end` event when the job is final",
        },
        **problem_responses(401, 404, 422),
    },
    summary="A job's status and stage changes, as server-sent events",
)
def job_event_stream(job_id: str, request: Request, caller: CallerDep, session: SessionDep) -> StreamingResponse:
    # The job is looked up before the stream starts, so an unknown id is a 404 problem.
    first = job_out(jobs.get_job(session, caller.tenant, job_id))
    return StreamingResponse(
        job_events.stream(request.app.state.sessions, caller.tenant, first),
        media_type=EVENT_STREAM,
        # No cache, and no proxy buffering (nginx reads X-Accel-Buffering).
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
