"""The synchronous client: ``Client`` talks to the API, ``Job`` is one conversion job.

from modelport import Client

with Client() as client:                     # MODELPORT_URL, MODELPORT_API_KEY
    job = client.submit("resnet18.pth", spec={
        "architecture": {"name": "torchvision.models.resnet18"},
        "inputs": [{"name": "input", "shape": [1, 3, 224, 224]}],
        "quantization": ["float32", "int8"],
    }, calibration="calib.npy")
    final = job.wait(timeout=1800, on_progress=lambda j: print(j.status, j.stage))
    paths = job.download("out/")             # {name: path}, sha256 checked
    report = job.report()                    # typed (modelport.schemas.report.Report): report.verdict
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from tenacity import Retrying

from modelport._transport import (
    CHUNK,
    FINAL_STATUSES,
    DownloadProgress,
    DownloadSink,
    JobHandle,
    RetryPolicy,
    SpecLike,
    Submission,
    UploadProgress,
    downloadable,
    fingerprint,
    resolve,
)
from modelport.errors import WaitTimeout, error_from_response
from modelport.schemas.job import ArtifactOut, JobOut, JobPage, ToolchainOut
from modelport.schemas.report import Report

PathLike = str | os.PathLike[str]


class Client:
    """The ModelPort API over httpx.

    ``base_url`` defaults to ``MODELPORT_URL`` (else http://127.0.0.1:8000), ``api_key`` to
    ``MODELPORT_API_KEY`` (ConfigurationError when neither is set). ``timeout`` (seconds) bounds each
    network read or write, not a whole upload. 429 and 503 answers are retried per ``retry``. Every error
    answer of the API raises an ``APIError`` subclass carrying the problem's ``code``. ``transport`` is
    handed to httpx (e.g. ``httpx.MockTransport`` or a proxy-aware transport).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, api_key = resolve(base_url, api_key)
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # -- requests -------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """One API call with the retry policy; raises the typed APIError of an error answer.
        GET and HEAD are retried after a dropped connection too (``idempotent`` overrides)."""
        safe = method in ("GET", "HEAD") if idempotent is None else idempotent
        for attempt in Retrying(**self.retry.options(idempotent=safe)):
            with attempt:
                response = self._http.request(method, path, **kwargs)
                if response.is_error:
                    raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- resources ------------------------------------------------------------------------------------

    def submit(
        self,
        model_path: PathLike,
        spec: SpecLike = None,
        *,
        calibration: PathLike | None = None,
        inputs: PathLike | None = None,
        idempotency_key: str | None = None,
        on_upload: UploadProgress | None = None,
    ) -> Job:
        """Upload a model with its job spec; the queued Job (``POST /v1/jobs``).

        ``spec``: a ``JobSpec``, a dict or a JSON string (docs/api.md; the server validates it: 422
        ``invalid_spec`` with ``errors``). ``calibration`` / ``inputs``: .npy (one input) or .npz keyed by
        input name, samples on the leading axis. With ``idempotency_key`` a repeated call answers the first
        job (and a dropped connection is retried). ``on_upload(sent, total)`` sees the bytes as they go.
        Raises FileNotFoundError for a missing file, InvalidRequest (422) for a refused submission.
        """
        submission = Submission.build(model_path, spec, calibration, inputs, idempotency_key)
        for attempt in Retrying(**self.retry.options(idempotent=idempotency_key is not None)):
            with attempt, ExitStack() as stack:
                files = submission.open(stack, on_upload)
                response = self._http.post("/v1/jobs", data=submission.data, files=files, headers=submission.headers)
                if response.is_error:
                    raise error_from_response(response)
        return Job(self, JobOut.model_validate_json(response.content))

    def job(self, job_id: str) -> Job:
        """The job with this id (NotFound for an unknown id or another tenant's job)."""
        return Job(self, JobOut.model_validate(self._json("GET", f"/v1/jobs/{job_id}")))

    def jobs(self, status: str | None = None, limit: int = 20) -> list[Job]:
        """Up to ``limit`` jobs, newest first, optionally only those with ``status``; follows the API's
        pages (at most 100 a request) until ``limit`` jobs or the last page."""
        found: list[Job] = []
        cursor: str | None = None
        while len(found) < limit:
            params: dict[str, Any] = {"limit": min(100, limit - len(found))}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = JobPage.model_validate(self._json("GET", "/v1/jobs", params=params))
            found.extend(Job(self, item) for item in page.items)
            cursor = page.next_cursor
            if not cursor or not page.items:
                break
        return found

    def toolchains(self) -> list[ToolchainOut]:
        """The toolchain environments of the service, their state and exact package versions."""
        return [ToolchainOut.model_validate(t) for t in self._json("GET", "/v1/toolchains")]


class Job(JobHandle):
    """A conversion job. ``info`` is its state as last fetched (``refresh`` and ``wait`` update it)."""

    client: Client

    def refresh(self) -> JobOut:
        self.info = JobOut.model_validate(self.client._json("GET", f"/v1/jobs/{self.id}"))
        return self.info

    def wait(
        self,
        timeout: float | None = None,
        on_progress: Callable[[JobOut], None] | None = None,
        poll_interval: float = 1.0,
    ) -> JobOut:
        """Poll until the job is succeeded, failed or cancelled; its final state (check ``status`` and
        ``error``: a failed job is an answer, not an exception). ``on_progress(job)`` is called with the
        first state and on every change of status, stage or a stage's state. Raises WaitTimeout after
        ``timeout`` seconds (None: no limit); the job itself goes on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while True:
            info = self.refresh()
            if on_progress is not None and fingerprint(info) != seen:
                seen = fingerprint(info)
                on_progress(info)
            if info.status in FINAL_STATUSES:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(self.id, info.status, timeout or 0.0)
            pause = poll_interval if deadline is None else min(poll_interval, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    def artifacts(self) -> list[ArtifactOut]:
        """The artifacts the job lists: name, size, sha256, media type, precision, toolchain."""
        return [ArtifactOut.model_validate(a) for a in self.client._json("GET", f"/v1/jobs/{self.id}/artifacts")]

    def download(
        self,
        directory: PathLike = ".",
        names: list[str] | None = None,
        on_progress: DownloadProgress | None = None,
    ) -> dict[str, Path]:
        """Stream the artifacts (all, or ``names``) flat into ``directory`` under their names; each file's
        size and sha256 are checked against the API's listing before it takes its name (DigestMismatch
        otherwise, and no file is left). Returns {name: path}. ``on_progress(name, written, size)``."""
        target = Path(directory)
        paths: dict[str, Path] = {}
        for artifact in downloadable(self.artifacts(), names):
            paths[artifact.name] = self._download_one(target, artifact, on_progress)
        return paths

    def _download_one(self, directory: Path, artifact: ArtifactOut, on_progress: DownloadProgress | None) -> Path:
        url = f"/v1/jobs/{self.id}/artifacts/{artifact.name}"
        for attempt in Retrying(**self.client.retry.options(idempotent=True)):
            with attempt, self.client._http.stream("GET", url) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                sink = DownloadSink(directory, artifact, on_progress)
                try:
                    for chunk in response.iter_bytes(CHUNK):
                        sink.write(chunk)
                except BaseException:
                    sink.abort()
                    raise
                path = sink.finish(response)
        return path

    def report(self) -> Report:
        """The accuracy and performance report, typed (``modelport.schemas.report.Report``, the
        API's own model; fields it does not name are kept). Conflict ``report_not_ready`` while
        the job runs; NotFound ``report_not_produced`` when it ended without one; Gone
        ``report_expired``."""
        return Report.model_validate(self.report_json())

    def report_json(self) -> dict[str, Any]:
        """The report's JSON exactly as the API serves it (docs/report.md); same errors as ``report``."""
        report: dict[str, Any] = self.client._json("GET", f"/v1/jobs/{self.id}/report")
        return report

    def cancel(self) -> JobOut:
        """Cancel the job (its running stage is killed within seconds); Conflict ``job_finished`` when it
        had already ended."""
        self.info = JobOut.model_validate(self.client._json("POST", f"/v1/jobs/{self.id}/cancel"))
        return self.info

    def log(self, stage: str) -> str:
        """A stage's log (text); Conflict ``log_not_ready`` while the stage runs."""
        return self.client.request("GET", f"/v1/jobs/{self.id}/logs/{stage}").text
