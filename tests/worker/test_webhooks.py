"""Webhooks: a job's callback_url hears of its final state, signed the Standard Webhooks way,
retried with backoff, stopped by 410, and never sent to a private address.

The receiver is a real HTTP server on loopback (allowed explicitly, as an operator would
allow an internal host); signatures are checked here by recomputing the HMAC by hand, not
with the library the service signs with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from domain import webhooks
from domain.config import Settings, WebhookSettings
from domain.db import make_engine, make_sessionmaker, session_scope
from domain.models import Job, WebhookDelivery
from domain.models.base import utcnow
from tests.support.api import submit
from tests.support.stack import running_service

SPEC = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
    "targets": ["onnx"],
}


class Receiver:
    """A loopback HTTP server that records each POST and answers the next queued status."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        self.delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def verify(secret: str, headers: dict[str, str], body: bytes) -> None:
    """The Standard Webhooks check, by hand: v1 = base64(HMAC-SHA256(key, id.timestamp.body))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"].split(" ") == [f"v1,{expected}"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60


def loopback(**changes: float) -> WebhookSettings:
    return WebhookSettings(allowed_hosts=["127.0.0.1/32"], **changes)


@pytest.fixture
def sessions(settings: Settings):  # type: ignore[no-untyped-def]
    # The settings fixture's database already has the migrations' schema.
    return make_sessionmaker(make_engine(settings.database_url))


def make_job(sessions, url: str, status: str = "succeeded") -> str:  # type: ignore[no-untyped-def]
    with session_scope(sessions) as session:
        job = Job(tenant="t1", status=status, spec={}, model_key="k", model_size=1, model_sha256="0" * 64)
        session.add(job)
        session.flush()
        webhooks.register(session, job, url)
        return job.id


def delivery(sessions, job_id: str) -> WebhookDelivery:  # type: ignore[no-untyped-def]
    with sessions() as session:
        row = session.query(WebhookDelivery).filter_by(job_id=job_id).one()
        session.expunge(row)
        return row


def fail(sessions, job_id: str) -> None:  # type: ignore[no-untyped-def]
    with session_scope(sessions) as session:
        job = session.get(Job, job_id)
        job.status, job.finished_at = "failed", utcnow()
        job.error_code, job.error_message, job.error_stage = "export_failed", "it broke", "export_onnx"


def make_due(sessions, job_id: str) -> None:  # type: ignore[no-untyped-def]
    with session_scope(sessions) as session:
        row = session.query(WebhookDelivery).filter_by(job_id=job_id).one()
        row.next_attempt_at = utcnow() - timedelta(seconds=1)


# -- Which URLs a webhook may call -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",  # a name that resolves to loopback
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
        "http://100.64.0.1/hook",  # shared address space
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # loopback, IPv4-mapped
        "http://0.0.0.0/hook",
        "ftp://93.184.216.34/hook",
        "http:///nohost",
    ],
)
def test_private_and_malformed_callback_urls_are_refused(url: str) -> None:
    with pytest.raises(webhooks.CallbackRefused):
        webhooks.check_callback_url(url, [])


def test_public_addresses_and_allowed_hosts_pass() -> None:
    webhooks.check_callback_url("https://93.184.216.34/hook", [])  # a public literal: no DNS needed
    webhooks.check_callback_url("http://10.1.2.3/hook", ["10.0.0.0/8"])
    webhooks.check_callback_url("http://hooks.internal:8080/x", ["hooks.internal"])
    with pytest.raises(webhooks.CallbackRefused):
        webhooks.check_callback_url("http://10.1.2.3/hook", ["10.9.0.0/16"])


def test_a_refused_callback_url_is_a_422_with_its_code(
    client: TestClient, auth: dict[str, str], squeezenet_pth: Path
) -> None:
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "file:///etc/passwd"):
        response = submit(client, auth, squeezenet_pth.read_bytes(), {**SPEC, "callback_url": url})
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == "callback_url_refused"
        assert "Traceback" not in problem["detail"]
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []


def test_an_allowed_callback_url_is_accepted_and_shown_on_the_job(
    settings: Settings, auth: dict[str, str], squeezenet_pth: Path
) -> None:
    from app.main import create_app

    allowed = settings.model_copy(update={"webhook": loopback()})
    with TestClient(create_app(allowed)) as client:
        response = submit(client, auth, squeezenet_pth.read_bytes(), {**SPEC, "callback_url": "http://127.0.0.1:9/h"})
        assert response.status_code == 202, response.text
        job = client.get(f"/v1/jobs/{response.json()['id']}", headers=auth).json()
        assert job["webhook"] == {
            "url": "http://127.0.0.1:9/h",
            "id": f"msg_{job['id']}",
            "state": "waiting",
            "attempts": 0,
            "next_attempt_at": None,
            "deliveries": [],
        }
        first = client.get("/v1/webhooks/secret", headers=auth).json()["secret"]
        assert first.startswith("whsec_")
        assert len(base64.b64decode(first[6:])) == 32
        assert client.get("/v1/webhooks/secret", headers=auth).json()["secret"] == first
        rotated = client.post("/v1/webhooks/secret/rotate", headers=auth).json()["secret"]
        assert rotated != first
        assert client.get("/v1/webhooks/secret", headers={"Authorization": "Bearer nope"}).status_code == 401


# -- Delivery, retries, 410 ------------------------------------------------------------------


def test_a_final_job_is_delivered_signed_and_retried_with_the_same_id(sessions, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    config = loopback(retry_base_seconds=30)
    receiver.statuses = [500, 204]
    job_id = make_job(sessions, receiver.url, status="running")
    assert webhooks.deliver_due(sessions, config) == 0  # not final yet: nothing is sent
    fail(sessions, job_id)

    assert webhooks.deliver_due(sessions, config) == 1
    row = delivery(sessions, job_id)
    assert (row.state, row.attempts, [a["status_code"] for a in row.log]) == ("pending", 1, [500])
    wait = (row.next_attempt_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds()
    assert 25 < wait <= 30  # base * 2**0
    assert webhooks.deliver_due(sessions, config) == 0  # not due yet
    make_due(sessions, job_id)
    assert webhooks.deliver_due(sessions, config) == 1
    row = delivery(sessions, job_id)
    assert (row.state, row.attempts, [a["status_code"] for a in row.log]) == ("delivered", 2, [500, 204])
    make_due(sessions, job_id)
    assert webhooks.deliver_due(sessions, config) == 0  # delivered is final

    assert len(receiver.requests) == 2
    with session_scope(sessions) as session:
        secret = webhooks.tenant_secret(session, "t1")
    (first_headers, first_body), (second_headers, second_body) = receiver.requests
    for headers, body in receiver.requests:
        verify(secret, headers, body)
        assert headers["content-type"] == "application/json"
    assert first_headers["webhook-id"] == second_headers["webhook-id"] == f"msg_{job_id}"
    assert first_body == second_body
    event = json.loads(first_body)
    assert event["type"] == "job.failed"
    assert event["data"]["id"] == job_id
    assert event["data"]["status"] == "failed"
    assert event["data"]["error"] == {"code": "export_failed", "message": "it broke", "stage": "export_onnx"}
    assert event["data"]["links"]["report"] == f"/v1/jobs/{job_id}/report"


def test_410_gone_stops_the_retries(sessions, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    receiver.statuses = [410]
    job_id = make_job(sessions, receiver.url)
    assert webhooks.deliver_due(sessions, loopback()) == 1
    row = delivery(sessions, job_id)
    assert (row.state, row.attempts, row.next_attempt_at) == ("stopped", 1, None)
    make_due(sessions, job_id)  # even when its time comes round, a stopped delivery stays stopped
    assert webhooks.deliver_due(sessions, loopback()) == 0
    assert len(receiver.requests) == 1


def test_attempts_end_after_max_attempts_and_the_backoff_doubles_to_its_cap(sessions, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    config = loopback(max_attempts=3, retry_base_seconds=1, retry_max_seconds=5)
    assert [webhooks.backoff(n, config) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    receiver.statuses = [500, 502, 503, 200]
    job_id = make_job(sessions, receiver.url)
    for _ in range(5):
        make_due(sessions, job_id)
        webhooks.deliver_due(sessions, config)
    row = delivery(sessions, job_id)
    assert (row.state, row.attempts) == ("gave_up", 3)
    assert [a["status_code"] for a in row.log] == [500, 502, 503]
    assert len(receiver.requests) == 3


def test_a_timeout_is_an_attempt_with_an_error(sessions) -> None:  # type: ignore[no-untyped-def]
    slow = Receiver(delay=3)
    try:
        job_id = make_job(sessions, slow.url)
        assert webhooks.deliver_due(sessions, loopback(timeout_seconds=0.5)) == 1
        row = delivery(sessions, job_id)
        assert row.state == "pending"
        assert row.log[0]["status_code"] is None
        assert "Timeout" in row.log[0]["error"]
        assert row.log[0]["seconds"] < 2.5
    finally:
        slow.close()


def test_an_address_no_longer_allowed_is_not_called(sessions, receiver: Receiver) -> None:  # type: ignore[no-untyped-def]
    # Accepted while loopback was allowed; the operator then removed it: checked again per attempt.
    job_id = make_job(sessions, receiver.url)
    assert webhooks.deliver_due(sessions, WebhookSettings(allowed_hosts=[])) == 1
    row = delivery(sessions, job_id)
    assert row.log[0]["status_code"] is None
    assert row.log[0]["error"].startswith("refused:")
    assert receiver.requests == []


# -- Through the running service -------------------------------------------------------------


@pytest.mark.e2e
def test_a_cancelled_job_calls_back_through_the_control_worker(
    tmp_path: Path, squeezenet_pth: Path, receiver: Receiver
) -> None:
    env = {
        "MODELPORT_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1/32"]',
        "MODELPORT_WEBHOOK_SWEEP_INTERVAL_SECONDS": "0.5",
    }
    # Only the control worker: the job stays queued until it is cancelled.
    with running_service(tmp_path / "svc", queues=["control"], env=env) as service:
        secret = service.client.get("/v1/webhooks/secret").json()["secret"]
        job = service.submit(squeezenet_pth, {**SPEC, "callback_url": receiver.url})
        assert service.client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not receiver.requests:
            time.sleep(0.2)
        assert len(receiver.requests) == 1, f"no callback within 60 s; logs in {service.log_dir}"
        headers, body = receiver.requests[0]
        verify(secret, headers, body)
        assert json.loads(body)["type"] == "job.cancelled"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            shown = service.client.get(f"/v1/jobs/{job['id']}").json()["webhook"]
            if shown["state"] == "delivered":
                break
            time.sleep(0.2)
        assert shown["state"] == "delivered"
        assert shown["deliveries"][0]["status_code"] == 200
