from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
StageState = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]


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
    started_at: datetime | None
    finished_at: datetime | None
    error: JobError | None = None
    skipped_reason: str | None = None


class JobLinks(BaseModel):
    self: str
    artifacts: str
    report: str
    cancel: str


class JobOut(BaseModel):
    id: str
    status: JobStatus
    stage: str | None
    stages: list[StageOut]
    error: JobError | None
    model: dict[str, Any]
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: JobLinks


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
