"""ORM models. Import them here so Alembic's metadata sees every table."""

from domain.models.api_key import ApiKey
from domain.models.base import Base
from domain.models.job import Artifact, Job, StageRun
from domain.models.webhook import WebhookDelivery, WebhookSecret

__all__ = ["ApiKey", "Artifact", "Base", "Job", "StageRun", "WebhookDelivery", "WebhookSecret"]
