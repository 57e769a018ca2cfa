"""What the sync and the async client share: settings from the environment, the retry policy, the
submission's multipart parts, the spec's JSON, and the checked download of one artifact."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from modelport.errors import RETRYABLE, ConfigurationError, DigestMismatch, ModelPortError
from modelport.schemas.job import ArtifactOut, JobOut
from modelport.schemas.spec import JobSpec

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
CHUNK = 1024 * 1024

# (bytes sent so far, bytes in total) of an upload; (artifact name, bytes written, its size) of a download.
UploadProgress = Callable[[int, int], None]
DownloadProgress = Callable[[str, int, int], None]
SpecLike = JobSpec | Mapping[str, Any] | str | None


def resolve(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """The API's URL and key: the arguments, else ``MODELPORT_URL`` / ``MODELPORT_API_KEY``, else the
    URL of ``make run`` (http://127.0.0.1:8000). Raises ConfigurationError without a key."""
    url = base_url or os.environ.get("MODELPORT_URL") or DEFAULT_URL
    key = api_key or os.environ.get("MODELPORT_API_KEY")
    if not key:
        raise ConfigurationError("no API key: pass api_key=... or set MODELPORT_API_KEY (`make run` prints one)")
    return url.rstrip("/"), key


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries 429 and 503 answers (and, for requests that are safe to repeat, a
    connection dropped or timed out; not one refused): at most ``attempts`` tries, waiting the answer's
    ``Retry-After`` or else ``backoff`` seconds doubling each time, never more than ``max_wait`` seconds.
    ``RetryPolicy(attempts=1)`` turns retries off."""

    attempts: int = 5
    backoff: float = 0.5
    max_wait: float = 30.0

    def options(self, *, idempotent: bool) -> dict[str, Any]:
        """Keyword arguments for tenacity's ``Retrying`` / ``AsyncRetrying``."""

        def retryable(error: BaseException) -> bool:
            # A refused connection (nothing listens) is answered at once; a dropped one is retried.
            dropped = isinstance(error, httpx.TransportError) and not isinstance(error, httpx.ConnectError)
            return isinstance(error, RETRYABLE) or (idempotent and dropped)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            hinted = getattr(error, "retry_after", None)
            delay = hinted if hinted is not None else self.backoff * 2 ** (state.attempt_number - 1)
            return float(min(delay, self.max_wait))

        return {
            "retry": retry_if_exception(retryable),
            "stop": stop_after_attempt(max(1, self.attempts)),
            "wait": wait,
            "reraise": True,
        }


def spec_json(spec: SpecLike) -> str:
    """The ``spec`` form field. A JobSpec sends only the fields set on it, so the server's defaults apply;
    a mapping or a JSON string is sent as given (the server validates it and answers 422 ``invalid_spec``)."""
    if spec is None:
        return "{}"
    if isinstance(spec, JobSpec):
        return spec.model_dump_json(exclude_unset=True)
    if isinstance(spec, str):
        return spec
    return json.dumps(dict(spec))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _CountingReader:
    """A file that reports the bytes read from it; httpx's multipart encoder reads it in chunks and finds
    its length by ``fileno``, so the request keeps its Content-Length."""

    def __init__(self, handle: IO[bytes], count: Callable[[int], None]) -> None:
        self._handle = handle
        self._count = count

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self._count(len(chunk))
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()


@dataclass(frozen=True)
class Submission:
    """A job submission's parts; ``open`` gives fresh file handles for each attempt."""

    model: Path
    spec: str
    calibration: Path | None
    inputs: Path | None
    model_sha256: str
    idempotency_key: str | None

    @classmethod
    def build(
        cls,
        model_path: str | os.PathLike[str],
        spec: SpecLike,
        calibration: str | os.PathLike[str] | None,
        inputs: str | os.PathLike[str] | None,
        idempotency_key: str | None,
    ) -> Submission:
        model = Path(model_path)
        paths = [p for p in (model, calibration, inputs) if p is not None]
        for path in map(Path, paths):
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
        return cls(
            model=model,
            spec=spec_json(spec),
            calibration=Path(calibration) if calibration is not None else None,
            inputs=Path(inputs) if inputs is not None else None,
            # The API checks the upload against it: a file changed or cut short on the way is refused.
            model_sha256=file_sha256(model),
            idempotency_key=idempotency_key,
        )

    @property
    def total(self) -> int:
        return sum(p.stat().st_size for p in (self.model, self.calibration, self.inputs) if p is not None)

    @property
    def headers(self) -> dict[str, str]:
        return {"Idempotency-Key": self.idempotency_key} if self.idempotency_key else {}

    def open(self, stack: ExitStack, on_upload: UploadProgress | None) -> dict[str, Any]:
        """The multipart ``files`` for httpx, opened on ``stack``; ``on_upload`` sees the bytes read."""
        total, sent = self.total, 0

        def count(size: int) -> None:
            nonlocal sent
            sent += size
            if on_upload is not None and size:
                on_upload(sent, total)

        files: dict[str, Any] = {}
        for field, path in (("model", self.model), ("calibration", self.calibration), ("inputs", self.inputs)):
            if path is not None:
                handle = stack.enter_context(path.open("rb"))
                files[field] = (path.name, _CountingReader(handle, count), "application/octet-stream")
        return files

    @property
    def data(self) -> dict[str, str]:
        return {"spec": self.spec, "model_sha256": self.model_sha256}


def artifact_path(directory: Path, artifact: ArtifactOut) -> Path:
    """Where an artifact goes: flat in ``directory`` under its name (a name with a path in it is refused)."""
    name = artifact.name
    if not name or Path(name).name != name or name in (".", ".."):
        raise DigestMismatch(name, "a plain file name", "a path")
    return directory / name


class DownloadSink:
    """Writes an artifact's bytes to ``<name>.part`` while hashing them, then checks the size and sha256
    the API lists (and its ``X-Checksum-SHA256`` header) before renaming the file into place."""

    def __init__(self, directory: Path, artifact: ArtifactOut, on_progress: DownloadProgress | None) -> None:
        self.artifact = artifact
        self.path = artifact_path(directory, artifact)
        self.partial = self.path.with_name(self.path.name + ".part")
        self._digest = hashlib.sha256()
        self._written = 0
        self._on_progress = on_progress
        directory.mkdir(parents=True, exist_ok=True)
        self._handle = self.partial.open("wb")

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self._digest.update(chunk)
        self._written += len(chunk)
        if self._on_progress is not None:
            self._on_progress(self.artifact.name, self._written, self.artifact.size)

    def finish(self, response: httpx.Response) -> Path:
        self._handle.close()
        actual = self._digest.hexdigest()
        header = response.headers.get("X-Checksum-SHA256")
        try:
            if self._written != self.artifact.size:
                raise DigestMismatch(self.artifact.name, f"{self.artifact.size} bytes", f"{self._written} bytes")
            if actual != self.artifact.sha256:
                raise DigestMismatch(self.artifact.name, f"sha256 {self.artifact.sha256}", f"sha256 {actual}")
            if header is not None and header != self.artifact.sha256:
                raise DigestMismatch(self.artifact.name, f"sha256 {self.artifact.sha256}", f"header sha256 {header}")
        except DigestMismatch:
            self.partial.unlink(missing_ok=True)
            raise
        self.partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        self._handle.close()
        self.partial.unlink(missing_ok=True)


def fingerprint(job: JobOut) -> tuple[Any, ...]:
    """What ``on_progress`` is called on a change of: the status, the current stage, every stage's state."""
    return job.status, job.stage, tuple((s.name, s.state) for s in job.stages)


def downloadable(artifacts: list[ArtifactOut], names: list[str] | None) -> list[ArtifactOut]:
    """The artifacts to fetch: all listed, or those named. Raises ModelPortError for a name not listed."""
    if names is None:
        return artifacts
    listed = {a.name: a for a in artifacts}
    missing = [n for n in names if n not in listed]
    if missing:
        have = ", ".join(listed) or "none"
        raise ModelPortError(f"the job lists no artifact {', '.join(map(repr, missing))}; it has: {have}")
    return [listed[n] for n in names]


class JobHandle:
    """What ``Job`` and ``AsyncJob`` share: the job's state as last fetched (``info``)."""

    def __init__(self, client: Any, info: JobOut) -> None:
        self.client = client
        self.info = info

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> str:
        """The status as last fetched: ``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
        return self.info.status

    @property
    def done(self) -> bool:
        return self.info.status in FINAL_STATUSES

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, status={self.status!r})"
