"""A job's status and a stage's state: the values stored in the database and shown by the API."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StageState(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"  # released to the broker, not yet claimed
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# A job in one of these will change no more (a redelivered task must leave it alone).
FINAL: frozenset[str] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# A stage in one of these is over: the stages that wait for it may run.
STAGE_OVER: frozenset[str] = frozenset({StageState.SUCCEEDED, StageState.FAILED, StageState.SKIPPED})
# Not yet running: a failed job skips these, a cancelled job cancels them.
WAITING: frozenset[str] = frozenset({StageState.PENDING, StageState.QUEUED})
# Not over yet: what a cancellation cancels, and a stage whose log is still to come.
UNFINISHED: frozenset[str] = frozenset({StageState.PENDING, StageState.QUEUED, StageState.RUNNING})
