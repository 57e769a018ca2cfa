"""ModelPort's Python client, and the API's schemas it shares with the server (``modelport.schemas``).

Importing it loads httpx, pydantic and tenacity, never an ML framework, FastAPI, Celery or SQLAlchemy.
``modelport.Client`` / ``modelport.AsyncClient`` talk to the API; the ``modelport`` command is
``modelport.cli``. docs/client.md has the surface.
"""

from modelport._transport import RetryPolicy
from modelport.aio import AsyncClient, AsyncJob
from modelport.client import Client, Job
from modelport.errors import (
    APIError,
    AuthenticationError,
    BadRequest,
    ConfigurationError,
    Conflict,
    DigestMismatch,
    Gone,
    InvalidRequest,
    ModelPortError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    UnsupportedMediaType,
    WaitTimeout,
)
from modelport.schemas.job import ArtifactOut, JobOut, ToolchainOut
from modelport.schemas.spec import JobSpec

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "ArtifactOut",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "ConfigurationError",
    "Conflict",
    "DigestMismatch",
    "Gone",
    "InvalidRequest",
    "Job",
    "JobOut",
    "JobSpec",
    "ModelPortError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "ToolchainOut",
    "UnsupportedMediaType",
    "WaitTimeout",
]
