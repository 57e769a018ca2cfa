"""Typed settings, one class per concern, each with its own environment prefix."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("var")
# An admin key seeded from MODELPORT_API_KEY is accepted verbatim: in production it must be
# at least this long (`make run` makes 46 characters; `openssl rand -hex 32` makes 64).
MIN_PRODUCTION_API_KEY = 32


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    # SQLite in the data directory unless DATABASE_URL says otherwise.
    database_url: str = Field(default="", alias="DATABASE_URL")
    # How long a worker (or the CLI) waits for SQLite's write lock before "database is locked".
    sqlite_busy_timeout_ms: int = 15_000
    # How long the API waits for a lock (SQLite's write lock, a PostgreSQL row lock) before
    # answering 503 database_busy with Retry-After: short, so a busy database answers fast.
    api_lock_timeout_ms: int = Field(default=5_000, ge=1, alias="MODELPORT_API_LOCK_TIMEOUT_MS")


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_STORAGE_", extra="ignore")

    backend: Literal["local", "s3"] = "local"
    # Local backend: a directory; empty means <data dir>/objects.
    local_root: str = ""
    # S3 backend (AWS S3, MinIO or any S3-compatible server), as the API and workers reach
    # it. Downloads stream through the API, so there is no public endpoint (no presigned URLs).
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    # Empty means AWS's own endpoint for the region.
    s3_endpoint_url: str = ""
    # Both empty means boto3's credential chain (AWS_* variables, profile, instance role).
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # MinIO and most S3-compatible servers need "path" (http://host/bucket/key).
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Uploads go up in parts of this size (S3's minimum is 5 MiB): the memory one upload holds.
    s3_part_size_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2, le=5 * 1024**3)

    @model_validator(mode="after")
    def _s3_is_complete(self) -> StorageSettings:
        if self.backend != "s3":
            return self
        if not self.s3_bucket:
            raise ValueError(
                "MODELPORT_STORAGE_BACKEND=s3 needs MODELPORT_STORAGE_S3_BUCKET (the bucket must already exist)"
            )
        if bool(self.s3_access_key_id) != bool(self.s3_secret_access_key.get_secret_value()):
            raise ValueError(
                "set both MODELPORT_STORAGE_S3_ACCESS_KEY_ID and MODELPORT_STORAGE_S3_SECRET_ACCESS_KEY, "
                "or neither to use boto3's credential chain"
            )
        return self


class QueueSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", alias="REDIS_URL")
    # Prefix for queue names, so tests can share a Redis without sharing queues.
    queue_prefix: str = Field(default="", alias="MODELPORT_QUEUE_PREFIX")
    # How often the control worker looks for jobs the broker lost, and how long a pending
    # stage may wait unseen in any queue before it is sent again.
    reconcile_interval_seconds: float = Field(default=30, alias="MODELPORT_RECONCILE_INTERVAL_SECONDS")
    reconcile_grace_seconds: float = Field(default=60, alias="MODELPORT_RECONCILE_GRACE_SECONDS")
    # A running stage checks in every few seconds; one silent for longer lost its worker,
    # and is sent again (counting an attempt).
    heartbeat_stale_seconds: float = Field(default=90, gt=10, alias="MODELPORT_HEARTBEAT_STALE_SECONDS")
    # /readyz and /metrics ask the workers over the broker who is alive and which queues they
    # consume; the answer is whatever replied within this time (it bounds both endpoints).
    worker_ping_timeout_seconds: float = Field(default=1.0, gt=0, le=10, alias="MODELPORT_WORKER_PING_TIMEOUT_SECONDS")
    # /readyz answers 503 while a queue has no live worker (jobs sent now would wait). Turn it
    # off where readiness takes API replicas out of a load balancer (Kubernetes) and alert on
    # modelport_workers_alive instead: see docs/architecture.md.
    ready_requires_workers: bool = Field(default=True, alias="MODELPORT_READY_REQUIRES_WORKERS")

    @property
    def heartbeat_stale(self) -> timedelta:
        return timedelta(seconds=self.heartbeat_stale_seconds)


class LimitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore")

    max_upload_bytes: int = 4 * 1024**3
    max_data_upload_bytes: int = 1024**3
    stage_timeout_seconds: int = 30 * 60
    stage_threads: int = 1
    stage_nice: int = 10
    # Peak RSS of a stage's process tree; 0 means 60% of the machine's memory.
    stage_memory_bytes: int = 0
    max_validation_samples: int = 64
    # Stages fork from a pre-imported parent per toolchain (worker.warm) instead of starting a
    # fresh interpreter: seconds of framework import saved per stage. Off: every stage cold.
    warm_runners: bool = True


class ConversionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore")

    # Dotted-name prefixes a state dict's architecture may be built from.
    allowed_architectures: list[str] = ["torchvision.models.", "transformers."]
    # TFLite converters jobs may use (`auto` and `best` choose among them).
    enabled_toolchains: list[str] = ["onnx-tf", "onnx2tf", "litert-torch"]
    # `model_format: pickled_module` (a whole `torch.save(model)`): loading it runs code from
    # the file, so it is refused (422 format_disabled) unless the operator turns this on, and
    # then unpickled only inside the sandboxed stage. `auto` and `state_dict` never unpickle code.
    enable_pickled_module: bool = False


class RetentionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_RETENTION_", extra="ignore")

    # How long a finished job keeps its uploads, stage outputs, logs, report and artifacts;
    # 0 keeps them forever. The control worker (beat) sweeps every `sweep_interval_seconds`.
    hours: float = Field(default=7 * 24, ge=0)
    sweep_interval_seconds: float = Field(default=3600, gt=0)

    @property
    def period(self) -> timedelta | None:
        return timedelta(hours=self.hours) if self.hours > 0 else None


class WebhookSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_WEBHOOK_", extra="ignore")

    # A callback_url whose host is (or resolves to) a private, loopback, link-local or
    # reserved address is refused, so a webhook cannot reach into the service's own network.
    # Hosts or networks listed here are let through anyway (e.g. ["127.0.0.1/32"] for tests,
    # or an internal platform's subnet): names match exactly, networks by address.
    allowed_hosts: list[str] = []
    # One delivery attempt's connect + read time.
    timeout_seconds: float = Field(default=10, gt=0, le=120)
    # Failed attempts are retried after base * 2**(attempt - 1) seconds, at most max_seconds,
    # until max_attempts; a 410 Gone answer stops at once.
    max_attempts: int = Field(default=8, ge=1, le=50)
    retry_base_seconds: float = Field(default=10, gt=0)
    retry_max_seconds: float = Field(default=3600, gt=0)
    # How often the control worker (beat) looks for deliveries that are due.
    sweep_interval_seconds: float = Field(default=2, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPORT_", extra="ignore")

    # "production" refuses what only a single development machine may use: see _production_is_safe.
    environment: Literal["development", "production"] = "development"
    data_dir: Path = DEFAULT_DATA_DIR
    # Seeded at start as an admin key of the default tenant, accepted verbatim.
    api_key: str = ""
    log_json: bool = False

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    conversion: ConversionSettings = Field(default_factory=ConversionSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        """In production, refuse (at start: the API, the workers and the CLI build their
        settings first) the embedded SQLite database, whose single write lock and local file
        serve one machine, and a short seeded admin key. Raises ValueError naming each fix."""
        if self.environment != "production":
            return self
        problems = []
        if self.database_url.startswith("sqlite"):
            problems.append("the database is SQLite (DATABASE_URL unset or sqlite://): set DATABASE_URL to PostgreSQL")
        if self.api_key and len(self.api_key) < MIN_PRODUCTION_API_KEY:
            problems.append(
                f"MODELPORT_API_KEY has {len(self.api_key)} characters: use a random key of at least "
                f"{MIN_PRODUCTION_API_KEY} (e.g. openssl rand -hex 32), or none and create keys with the CLI"
            )
        if problems:
            raise ValueError("MODELPORT_ENVIRONMENT=production refuses: " + "; ".join(problems))
        return self

    @property
    def database_url(self) -> str:
        if self.database.database_url:
            return self.database.database_url
        return f"sqlite:///{(self.data_dir / 'modelport.db').resolve()}"

    @property
    def storage_root(self) -> Path:
        if self.storage.local_root:
            return Path(self.storage.local_root).resolve()
        return (self.data_dir / "objects").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
