"""ORM models. Import them here so Alembic's metadata sees every table."""

from modelport.models.api_key import ApiKey
from modelport.models.base import Base
from modelport.models.job import Artifact, Job, StageRun

__all__ = ["ApiKey", "Artifact", "Base", "Job", "StageRun"]
