from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from domain.models.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from domain.models.webhook import WebhookDelivery


class Job(IdMixin, TimestampMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("tenant", "idempotency_key"),)

    tenant: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    stage: Mapped[str | None] = mapped_column(String(50))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_filename: Mapped[str | None] = mapped_column(String(255))
    model_key: Mapped[str] = mapped_column(String(500))
    model_size: Mapped[int] = mapped_column(BigInteger)
    model_sha256: Mapped[str] = mapped_column(String(64))
    inputs_key: Mapped[str | None] = mapped_column(String(500))
    calibration_key: Mapped[str | None] = mapped_column(String(500))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_stage: Mapped[str | None] = mapped_column(String(50))
    error_log_tail: Mapped[str | None] = mapped_column(Text)
    report_key: Mapped[str | None] = mapped_column(String(500))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The 202 body as first sent, so an Idempotency-Key replay is byte-identical.
    creation_response: Mapped[str | None] = mapped_column(Text)
    # X-Request-ID of the submission: stages sent again by the reconciler log it too.
    request_id: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the retention sweep removed the job's objects (uploads, outputs, logs, report).
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)

    stages: Mapped[list[StageRun]] = relationship(
        back_populates="job", order_by="StageRun.position", cascade="all, delete-orphan", lazy="selectin"
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="job", order_by="Artifact.name", cascade="all, delete-orphan", lazy="selectin"
    )
    # Set when the spec has a callback_url (domain.webhooks).
    webhook: Mapped[WebhookDelivery | None] = relationship(cascade="all, delete-orphan", lazy="selectin")


class StageRun(IdMixin, TimestampMixin, Base):
    __tablename__ = "stage_runs"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(50))
    toolchain: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Refreshed while the stage runs: a running stage whose heartbeat stopped lost its worker.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    log_key: Mapped[str | None] = mapped_column(String(500))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="stages")


class Artifact(IdMixin, TimestampMixin, Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    object_key: Mapped[str] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[str] = mapped_column(String(100))
    precision: Mapped[str | None] = mapped_column(String(20))
    toolchain: Mapped[str | None] = mapped_column(String(50))
    # Listed after expiry with its size and sha256, but no longer downloadable.
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    job: Mapped[Job] = relationship(back_populates="artifacts")
