"""ORM rows to API schemas."""

from __future__ import annotations

from domain import webhooks
from domain.jobs.states import StageState
from domain.models import Artifact, Job, StageRun
from modelport.schemas.job import ArtifactOut, JobError, JobLinks, JobOut, StageOut, WebhookOut
from stages.kit.results import RunNote


def stage_out(s: StageRun) -> StageOut:
    """A stage run as the job resource shows it, with its process's usage (peak RSS, seconds, start-up)."""
    note = RunNote.from_json(s.result)
    return StageOut(
        name=s.name,
        toolchain=s.toolchain,
        state=s.state,  # type: ignore[arg-type]
        seconds=s.seconds,
        attempts=s.attempts,
        started_at=s.started_at,
        finished_at=s.finished_at,
        skipped_reason=note.skipped_reason if s.state == StageState.SKIPPED else None,
        error=JobError(code=s.error_code, message=s.error_message or "", stage=s.name) if s.error_code else None,
        peak_rss_bytes=note.peak_rss_bytes,
        process_seconds=note.process_seconds,
        startup_seconds=note.startup_seconds,
    )


def job_out(job: Job) -> JobOut:
    base = f"/v1/jobs/{job.id}"
    error = None
    if job.error_code:
        error = JobError(
            code=job.error_code,
            message=job.error_message or "",
            stage=job.error_stage,
            log_tail=job.error_log_tail,
        )
    return JobOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        stage=job.stage,
        stages=[stage_out(s) for s in job.stages],
        error=error,
        model={"filename": job.model_filename, "size": job.model_size, "sha256": job.model_sha256},
        spec=job.spec,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=JobLinks(self=base, artifacts=f"{base}/artifacts", report=f"{base}/report", cancel=f"{base}/cancel"),
        expired_at=job.expired_at,
        webhook=WebhookOut.model_validate(webhooks.view(job.webhook)) if job.webhook else None,
    )


def artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut(
        name=artifact.name,
        size=artifact.size,
        sha256=artifact.sha256,
        media_type=artifact.media_type,
        precision=artifact.precision,
        toolchain=artifact.toolchain,
        expired_at=artifact.expired_at,
    )
