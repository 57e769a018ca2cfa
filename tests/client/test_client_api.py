"""modelport.Client and AsyncClient against the real API (no workers: jobs stay queued), and the client's
own handling of answers the real API does not give on demand (503/429 retries, a corrupt download),
served by an httpx MockTransport."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import modelport
from modelport import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConfigurationError,
    Conflict,
    DigestMismatch,
    InvalidRequest,
    JobSpec,
    NotFound,
    RetryPolicy,
    ServerError,
    ServiceUnavailable,
    WaitTimeout,
)
from tests.client.conftest import SPEC
from tests.support.api import ADMIN_KEY


@pytest.fixture
def client(api_env: str) -> Client:
    with Client() as made:  # from MODELPORT_URL / MODELPORT_API_KEY
        yield made


def test_submit_answers_a_queued_job_and_the_upload_is_counted(client: Client, plain_state_dict: Path) -> None:
    seen: list[tuple[int, int]] = []
    job = client.submit(plain_state_dict, spec=SPEC, on_upload=lambda sent, total: seen.append((sent, total)))
    assert isinstance(job.info, modelport.JobOut)
    assert job.status == "queued"
    assert uuid.UUID(job.id)
    assert job.info.model == {
        "filename": "tiny.pth",
        "size": plain_state_dict.stat().st_size,
        "sha256": hashlib.sha256(plain_state_dict.read_bytes()).hexdigest(),
    }
    assert seen[-1] == (plain_state_dict.stat().st_size, plain_state_dict.stat().st_size)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)

    assert client.job(job.id).info.id == job.id
    assert job.id in [j.id for j in client.jobs(status="queued", limit=100)]
    assert job.id not in [j.id for j in client.jobs(status="succeeded")]


def test_a_jobspec_sends_only_the_fields_set(client: Client, plain_state_dict: Path) -> None:
    spec = JobSpec.model_validate({**SPEC, "targets": ["onnx"]})
    job = client.submit(plain_state_dict, spec=spec)
    # The server normalized it: its defaults filled in, ours as given.
    assert job.info.spec["targets"] == ["onnx"]
    assert job.info.spec["quantization"] == ["float32"]


def test_a_bad_spec_is_a_typed_error_with_the_problems_code(client: Client, plain_state_dict: Path) -> None:
    bad = {**SPEC, "inputs": [{"name": "input", "shape": [1, 0, 64, 64]}]}
    with pytest.raises(InvalidRequest) as caught:
        client.submit(plain_state_dict, spec=bad)
    error = caught.value
    assert (error.status, error.code) == (422, "invalid_spec")
    assert [e["loc"] for e in error.errors] == ["inputs.0.shape"]
    assert error.request_id
    assert error.problem["code"] == "invalid_spec"

    with pytest.raises(InvalidRequest) as caught:
        client.submit(plain_state_dict, spec={**SPEC, "architecture": {"name": "os.system"}})
    assert caught.value.code == "architecture_not_allowed"


def test_not_ready_then_cancelled_then_final(client: Client, plain_state_dict: Path) -> None:
    job = client.submit(plain_state_dict, spec=SPEC)
    with pytest.raises(Conflict) as caught:
        job.report()
    assert caught.value.code == "report_not_ready"
    assert caught.value.problem["job_status"] == "queued"

    assert job.cancel().status == "cancelled"
    assert job.status == "cancelled"
    assert job.done
    with pytest.raises(Conflict) as caught:
        job.cancel()
    assert caught.value.code == "job_finished"
    with pytest.raises(NotFound) as caught:
        job.report()
    assert caught.value.code == "report_not_produced"
    # wait returns at once on a final job and shows it once.
    seen: list[str] = []
    assert job.wait(timeout=5, on_progress=lambda info: seen.append(info.status)).status == "cancelled"
    assert seen == ["cancelled"]
    assert job.artifacts() == []
    assert job.download(Path("unused")) == {}


def test_wait_times_out_on_a_job_nobody_runs(client: Client, plain_state_dict: Path) -> None:
    job = client.submit(plain_state_dict, spec=SPEC)
    with pytest.raises(WaitTimeout) as caught:
        job.wait(timeout=0.3, poll_interval=0.1)
    assert (caught.value.job_id, caught.value.status) == (job.id, "queued")
    job.cancel()


def test_idempotency_key_answers_the_first_job(client: Client, plain_state_dict: Path) -> None:
    key = f"client-{uuid.uuid4()}"
    first = client.submit(plain_state_dict, spec=SPEC, idempotency_key=key)
    again = client.submit(plain_state_dict, spec=SPEC, idempotency_key=key)
    assert again.id == first.id
    with pytest.raises(InvalidRequest) as caught:
        client.submit(plain_state_dict, spec={**SPEC, "targets": ["onnx"]}, idempotency_key=key)
    assert caught.value.code == "idempotency_key_reused"


def test_unknown_job_and_bad_key(client: Client, api_url: str) -> None:
    with pytest.raises(NotFound) as caught:
        client.job(str(uuid.uuid4()))
    assert caught.value.code == "job_not_found"
    with Client(api_url, "not-a-key") as stranger, pytest.raises(AuthenticationError) as caught:
        stranger.jobs()
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")


def test_toolchains_are_typed(client: Client) -> None:
    toolchains = client.toolchains()
    assert {t.name for t in toolchains} == {"torch", "onnx-tf", "onnx2tf"}
    assert all(isinstance(t, modelport.ToolchainOut) for t in toolchains)
    torch = next(t for t in toolchains if t.name == "torch")
    assert torch.packages["torch"]


def test_no_key_anywhere_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="MODELPORT_API_KEY"):
        Client("http://127.0.0.1:9")


def test_async_client_submits_lists_and_cancels(api_url: str, plain_state_dict: Path) -> None:
    async def scenario() -> tuple[str, str, list[str], str]:
        async with AsyncClient(api_url, ADMIN_KEY) as client:
            job = await client.submit(plain_state_dict, spec=SPEC)
            listed = [j.id for j in await client.jobs(status="queued", limit=100)]
            try:
                await job.report()
            except Conflict as error:
                not_ready = error.code
            cancelled = await job.cancel()
            return job.id, not_ready, listed, cancelled.status

    job_id, not_ready, listed, status = asyncio.run(scenario())
    assert job_id in listed
    assert not_ready == "report_not_ready"
    assert status == "cancelled"


# --- what the real API does not do on demand: a busy database, a proxy's error page, a corrupt file ---

JOB_ID = "6f1c1d7e-0000-4000-8000-000000000001"
NOW = "2026-12-01T00:00:00+00:00"


def job_body(status: str = "succeeded") -> dict[str, object]:
    base = f"/v1/jobs/{JOB_ID}"
    return {
        "id": JOB_ID,
        "status": status,
        "stage": None,
        "stages": [],
        "error": None,
        "model": {},
        "spec": {},
        "created_at": NOW,
        "updated_at": NOW,
        "started_at": None,
        "finished_at": None,
        "links": {"self": base, "artifacts": f"{base}/artifacts", "report": f"{base}/report", "cancel": base},
    }


def busy(retry_after: str) -> httpx.Response:
    problem = {"type": "x", "title": "Service unavailable", "status": 503, "detail": "busy", "code": "database_busy"}
    return httpx.Response(
        503, json=problem, headers={"Retry-After": retry_after, "Content-Type": "application/problem+json"}
    )


def mocked(handler: Callable[[httpx.Request], httpx.Response], attempts: int = 3) -> Client:
    return Client(
        "http://modelport.test",
        "key",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=attempts, backoff=0.01),
    )


def test_503_and_429_are_retried_after_their_retry_after() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["Authorization"])
        if len(calls) == 1:
            return busy("0")
        if len(calls) == 2:
            limited = {"code": "rate_limited", "detail": "slow down"}
            return httpx.Response(429, json=limited, headers={"Retry-After": "0"})
        return httpx.Response(200, json=job_body())

    with mocked(handler) as client:
        assert client.job(JOB_ID).status == "succeeded"
    assert calls == ["Bearer key"] * 3


def test_retries_stop_at_the_budget_with_the_typed_error() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return busy("0.01")

    with mocked(handler, attempts=2) as client, pytest.raises(ServiceUnavailable) as caught:
        client.job(JOB_ID)
    assert calls == 2
    assert (caught.value.code, caught.value.retry_after) == ("database_busy", 0.01)


def test_a_non_problem_error_page_is_a_server_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with mocked(handler) as client, pytest.raises(ServerError) as caught:
        client.toolchains()
    assert (caught.value.status, caught.value.code) == (502, "http_502")
    assert "bad gateway" in caught.value.detail


def artifact_server(served: bytes, listed_sha: str, header_sha: str | None = None) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/artifacts"):
            listing = {
                "name": "model_float32.tflite",
                "size": len(served),
                "sha256": listed_sha,
                "media_type": "application/octet-stream",
                "precision": "float32",
                "toolchain": "onnx2tf",
            }
            return httpx.Response(200, json=[listing])
        if request.url.path.endswith("/model_float32.tflite"):
            return httpx.Response(200, content=served, headers={"X-Checksum-SHA256": header_sha or listed_sha})
        return httpx.Response(200, json=job_body())

    return mocked(handler)


def test_download_checks_the_sha256_and_leaves_no_file_when_it_differs(tmp_path: Path) -> None:
    good = b"TFL3" + bytes(range(200))
    with artifact_server(good, hashlib.sha256(good).hexdigest()) as client:
        paths = client.job(JOB_ID).download(tmp_path / "ok")
    assert paths == {"model_float32.tflite": tmp_path / "ok" / "model_float32.tflite"}
    assert paths["model_float32.tflite"].read_bytes() == good

    with artifact_server(good, hashlib.sha256(b"other").hexdigest()) as client, pytest.raises(DigestMismatch):
        client.job(JOB_ID).download(tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []

    # The listing is right but the header of the download says another file was served.
    with artifact_server(good, hashlib.sha256(good).hexdigest(), header_sha="0" * 64) as client:
        with pytest.raises(DigestMismatch, match="header"):
            client.job(JOB_ID).download(tmp_path / "header")
    assert list((tmp_path / "header").iterdir()) == []


def test_spec_json_forms() -> None:
    from modelport._transport import spec_json

    assert json.loads(spec_json(None)) == {}
    assert json.loads(spec_json({"targets": ["onnx"]})) == {"targets": ["onnx"]}
    assert spec_json('{"targets": ["tflite"]}') == '{"targets": ["tflite"]}'
    assert json.loads(spec_json(JobSpec(targets=["tflite"]))) == {"targets": ["tflite"]}
