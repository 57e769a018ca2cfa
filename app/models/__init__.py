"""ORM models. Import them here so Alembic's metadata sees every table."""

from app.models.api_key import ApiKey
from app.models.base import Base
from app.models.job import Artifact, Job, StageRun

__all__ = ["ApiKey", "Artifact", "Base", "Job", "StageRun"]
