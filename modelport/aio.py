"""The asynchronous client: the same surface as ``modelport.client``, with ``await``.

async with AsyncClient() as client:
    job = await client.submit("model.onnx", spec={"targets": ["tflite"]})
    final = await job.wait(timeout=900)
    await job.download("out/")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from tenacity import AsyncRetrying

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
from modelport.client import PathLike
from modelport.errors import WaitTimeout, error_from_response
from modelport.schemas.job import ArtifactOut, JobOut, JobPage, ToolchainOut
from modelport.schemas.report import Report


class AsyncClient:
    """The ModelPort API over ``httpx.AsyncClient``; arguments and errors as ``modelport.Client``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url, api_key = resolve(base_url, api_key)
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.base_url!r})"

    async def request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """As ``Client.request``."""
        safe = method in ("GET", "HEAD") if idempotent is None else idempotent
        async for attempt in AsyncRetrying(**self.retry.options(idempotent=safe)):
            with attempt:
                response = await self._http.request(method, path, **kwargs)
                if response.is_error:
                    raise error_from_response(response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()

    async def submit(
        self,
        model_path: PathLike,
        spec: SpecLike = None,
        *,
        calibration: PathLike | None = None,
        inputs: PathLike | None = None,
        idempotency_key: str | None = None,
        on_upload: UploadProgress | None = None,
    ) -> AsyncJob:
        """As ``Client.submit``."""
        submission = Submission.build(model_path, spec, calibration, inputs, idempotency_key)
        async for attempt in AsyncRetrying(**self.retry.options(idempotent=idempotency_key is not None)):
            with attempt, ExitStack() as stack:
                files = submission.open(stack, on_upload)
                response = await self._http.post(
                    "/v1/jobs", data=submission.data, files=files, headers=submission.headers
                )
                if response.is_error:
                    raise error_from_response(response)
        return AsyncJob(self, JobOut.model_validate_json(response.content))

    async def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, JobOut.model_validate(await self._json("GET", f"/v1/jobs/{job_id}")))

    async def jobs(self, status: str | None = None, limit: int = 20) -> list[AsyncJob]:
        """As ``Client.jobs``."""
        found: list[AsyncJob] = []
        cursor: str | None = None
        while len(found) < limit:
            params: dict[str, Any] = {"limit": min(100, limit - len(found))}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = JobPage.model_validate(await self._json("GET", "/v1/jobs", params=params))
            found.extend(AsyncJob(self, item) for item in page.items)
            cursor = page.next_cursor
            if not cursor or not page.items:
                break
        return found

    async def toolchains(self) -> list[ToolchainOut]:
        return [ToolchainOut.model_validate(t) for t in await self._json("GET", "/v1/toolchains")]


class AsyncJob(JobHandle):
    """As ``modelport.Job``, with coroutine methods."""

    client: AsyncClient

    async def refresh(self) -> JobOut:
        self.info = JobOut.model_validate(await self.client._json("GET", f"/v1/jobs/{self.id}"))
        return self.info

    async def wait(
        self,
        timeout: float | None = None,
        on_progress: Callable[[JobOut], None] | None = None,
        poll_interval: float = 1.0,
    ) -> JobOut:
        """As ``Job.wait``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while True:
            info = await self.refresh()
            if on_progress is not None and fingerprint(info) != seen:
                seen = fingerprint(info)
                on_progress(info)
            if info.status in FINAL_STATUSES:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(self.id, info.status, timeout or 0.0)
            pause = poll_interval if deadline is None else min(poll_interval, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(pause)

    async def artifacts(self) -> list[ArtifactOut]:
        return [ArtifactOut.model_validate(a) for a in await self.client._json("GET", f"/v1/jobs/{self.id}/artifacts")]

    async def download(
        self,
        directory: PathLike = ".",
        names: list[str] | None = None,
        on_progress: DownloadProgress | None = None,
    ) -> dict[str, Path]:
        """As ``Job.download``."""
        target = Path(directory)
        paths: dict[str, Path] = {}
        for artifact in downloadable(await self.artifacts(), names):
            paths[artifact.name] = await self._download_one(target, artifact, on_progress)
        return paths

    async def _download_one(self, directory: Path, artifact: ArtifactOut, on_progress: DownloadProgress | None) -> Path:
        url = f"/v1/jobs/{self.id}/artifacts/{artifact.name}"
        async for attempt in AsyncRetrying(**self.client.retry.options(idempotent=True)):
            with attempt:
                async with self.client._http.stream("GET", url) as response:
                    if response.is_error:
                        await response.aread()
                        raise error_from_response(response)
                    sink = DownloadSink(directory, artifact, on_progress)
                    try:
                        async for chunk in response.aiter_bytes(CHUNK):
                            sink.write(chunk)
                    except BaseException:
                        sink.abort()
                        raise
                    path = sink.finish(response)
        return path

    async def report(self) -> Report:
        """The report, typed (``modelport.schemas.report.Report``; unknown fields kept)."""
        return Report.model_validate(await self.report_json())

    async def report_json(self) -> dict[str, Any]:
        """The report's JSON exactly as the API serves it (docs/report.md)."""
        report: dict[str, Any] = await self.client._json("GET", f"/v1/jobs/{self.id}/report")
        return report

    async def cancel(self) -> JobOut:
        self.info = JobOut.model_validate(await self.client._json("POST", f"/v1/jobs/{self.id}/cancel"))
        return self.info

    async def log(self, stage: str) -> str:
        return (await self.client.request("GET", f"/v1/jobs/{self.id}/logs/{stage}")).text
