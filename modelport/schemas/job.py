from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
StageState = Literal["pending", "queued", "running", "succeeded", "failed", "skipped", "cancelled"]


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime: SQLite hands stored times back naive. (``domain.models.base`` has the
    same function for the ORM; this package imports no SQLAlchemy, so the client installs without it.)"""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# An RFC 3339 date-time needs its offset.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class JobError(BaseModel):
    code: str
    message: str
    stage: str | None
    log_tail: str | None = None


class StageOut(BaseModel):
    name: str
    toolchain: str
    state: StageState
    seconds: float | None
    attempts: int
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    error: JobError | None = None
    skipped_reason: str | None = None
    peak_rss_bytes: int | None = Field(
        default=None, description="Peak resident memory of the stage's process tree, bytes (null: no process ran)"
    )
    process_seconds: float | None = Field(
        default=None, description="Wall seconds of the stage's process, launch to exit (within seconds)"
    )
    startup_seconds: float | None = Field(
        default=None,
        description="Of process_seconds, the start-up: launching the process and importing its framework "
        "(near 0 for a stage forked from a warm parent)",
    )


class JobLinks(BaseModel):
    self: str
    artifacts: str
    report: str
    cancel: str


class WebhookAttemptOut(BaseModel):
    at: str = Field(description="When the attempt started (ISO 8601, UTC)")
    status_code: int | None = Field(description="The receiver's HTTP status; null when no answer came")
    error: str | None = Field(description="Why there was no answer (timeout, refused address, ...)")
    seconds: float


class WebhookOut(BaseModel):
    url: str
    id: str = Field(description="The webhook-id header of every attempt (the same on retries)")
    state: Literal["waiting", "pending", "delivered", "stopped", "gave_up"] = Field(
        description="waiting: the job is not final; pending: being sent or retried; delivered: a 2xx came; "
        "stopped: the receiver answered 410 Gone; gave_up: every attempt failed"
    )
    attempts: int
    next_attempt_at: str | None
    deliveries: list[WebhookAttemptOut]


class JobOut(BaseModel):
    id: str
    status: JobStatus
    stage: str | None
    stages: list[StageOut]
    error: JobError | None
    model: dict[str, Any]
    spec: dict[str, Any]
    created_at: UtcDatetime
    updated_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    links: JobLinks
    # When the retention removed the job's files (artifacts, report, logs, uploads); null until then.
    expired_at: UtcDatetime | None = None
    webhook: WebhookOut | None = Field(default=None, description="The callback_url's delivery, when the spec has one")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None
    limit: int


class ArtifactOut(BaseModel):
    name: str
    size: int
    sha256: str
    media_type: str
    precision: str | None
    toolchain: str | None
    # Set once the retention removed the file: listed, but a download answers 410.
    expired_at: UtcDatetime | None = None


class ToolchainOut(BaseModel):
    name: str
    summary: str
    queue: str
    ready: bool
    python: str
    lock_sha256: str
    converters: list[str]
    enabled: list[str]
    packages: dict[str, str]
