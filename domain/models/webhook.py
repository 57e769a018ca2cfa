"""Webhook deliveries (one per job that asked for a callback) and each tenant's signing secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from domain.models.base import Base, IdMixin, TimestampMixin


class WebhookSecret(IdMixin, TimestampMixin, Base):
    """A tenant's Standard Webhooks secret (``whsec_`` + base64 of 32 random bytes)."""

    __tablename__ = "webhook_secrets"

    tenant: Mapped[str] = mapped_column(String(100), unique=True)
    secret: Mapped[str] = mapped_column(String(100))


class WebhookDelivery(IdMixin, TimestampMixin, Base):
    """The callback of one job: created at submission (state ``waiting``), sent once the job
    is final, retried with backoff (``pending``) until ``delivered``, ``stopped`` (410) or
    ``gave_up`` (attempts exhausted). ``message_id`` is the ``webhook-id`` of every attempt."""

    __tablename__ = "webhook_deliveries"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    tenant: Mapped[str] = mapped_column(String(100))
    url: Mapped[str] = mapped_column(String(2000))
    message_id: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # [{"at": ISO 8601, "status_code": int | None, "error": str | None, "seconds": float}]
    log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
