"""Webhooks: a job's ``callback_url`` hears of its final state, signed the Standard Webhooks way.

How a delivery goes (https://www.standardwebhooks.com, the spec's "Signature scheme"):

- At submission the URL is checked (``check_callback_url``) and a ``WebhookDelivery`` row is
  made in state ``waiting``; its ``message_id`` is the ``webhook-id`` of every attempt, so a
  receiver can drop a retry it already handled.
- Once the job is final (succeeded, failed or cancelled, by whatever path), the control
  worker's periodic sweep (``deliver_due``) claims the row, POSTs the event and records the
  attempt. The body is the same on every attempt; ``webhook-timestamp`` is the attempt's time and
  ``webhook-signature`` is ``v1,`` + base64 HMAC-SHA256 over ``id.timestamp.body`` with the
  tenant's secret (``GET /v1/webhooks/secret``), computed by the ``standardwebhooks`` library.
- A 2xx answer ends it (``delivered``); 410 Gone stops it (``stopped``); anything else (another
  status, a timeout, a refused address) is retried after ``base * 2**(attempts - 1)`` seconds,
  at most ``retry_max_seconds``, until ``max_attempts`` (``gave_up``).

Outgoing calls go only to public addresses: the host is resolved again before each attempt (a
name can be re-pointed after submission), and redirects are not followed.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from domain.config import WebhookSettings
from domain.db import session_scope
from domain.jobs.states import FINAL
from domain.models import Job, WebhookDelivery, WebhookSecret
from domain.models.base import as_utc, utcnow

log = structlog.get_logger()

OPEN_STATES = ("waiting", "pending")
USER_AGENT = "ModelPort-Webhooks/1"


class CallbackRefused(ValueError):
    """A callback URL that must not be called: the message says why and what to do."""


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _allowed(host: str, address: Address | None, allowed_hosts: list[str]) -> bool:
    for entry in allowed_hosts:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if entry.lower() == host.lower():
                return True
            continue
        if address is not None and address in network:
            return True
    return False


def resolve(host: str, port: int) -> list[Address]:
    """The addresses ``host`` stands for (itself when it is an IP literal).

    Raises:
        CallbackRefused: the name does not resolve.
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CallbackRefused(f"callback_url host {host!r} does not resolve ({exc.strerror or exc})") from None
    return sorted({ipaddress.ip_address(info[4][0]) for info in infos}, key=str)


def check_callback_url(url: str, allowed_hosts: list[str]) -> None:
    """Refuse a URL a webhook must not call.

    Allowed: ``http``/``https`` URLs whose host resolves only to public (global unicast)
    addresses, or whose host name or addresses are in ``allowed_hosts`` (names exactly,
    networks such as ``10.0.0.0/8`` by address).

    Raises:
        CallbackRefused: another scheme, no host, a name that does not resolve, or an address
            that is private, loopback, link-local, shared, reserved or multicast.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackRefused(f"callback_url must be an http(s) URL with a host, got {url[:200]!r}")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackRefused(f"callback_url has an invalid port: {url[:200]!r}") from None
    if _allowed(host, None, allowed_hosts):
        return
    for address in resolve(host, port):
        if not _public(address) and not _allowed(host, address, allowed_hosts):
            raise CallbackRefused(
                f"callback_url host {host!r} is {address}, a private, loopback, link-local or reserved address: "
                "webhooks only call public addresses unless the operator allows the host "
                "(MODELPORT_WEBHOOK_ALLOWED_HOSTS)"
            )


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def tenant_secret(session: Session, tenant: str, *, rotate: bool = False) -> str:
    """The tenant's signing secret, made on first use; ``rotate`` replaces it (new deliveries
    and retries are signed with the new one)."""
    row = session.scalars(select(WebhookSecret).where(WebhookSecret.tenant == tenant)).first()
    if row is None:
        row = WebhookSecret(tenant=tenant, secret=new_secret())
        session.add(row)
    elif rotate:
        row.secret = new_secret()
    session.flush()
    return row.secret


def register(session: Session, job: Job, url: str) -> WebhookDelivery:
    """The delivery row of a job just accepted with ``callback_url``: sent once it is final."""
    delivery = WebhookDelivery(
        job_id=job.id, tenant=job.tenant, url=url, message_id=f"msg_{job.id}", state="waiting", attempts=0, log=[]
    )
    session.add(delivery)
    return delivery


def event(job: Job) -> dict[str, Any]:
    """The event a job's final state sends: ``{"type", "timestamp", "data"}`` (Standard
    Webhooks' payload shape); ``data`` is the job's id, status and error, and where to read more."""
    finished = as_utc(job.finished_at or job.updated_at)
    error = {"code": job.error_code, "message": job.error_message, "stage": job.error_stage} if job.error_code else None
    base = f"/v1/jobs/{job.id}"
    return {
        "type": f"job.{job.status}",
        "timestamp": finished.isoformat().replace("+00:00", "Z"),
        "data": {
            "id": job.id,
            "status": job.status,
            "error": error,
            "links": {"self": base, "report": f"{base}/report", "artifacts": f"{base}/artifacts"},
        },
    }


def signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, plus the content type."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def backoff(attempts: int, settings: WebhookSettings) -> float:
    """Seconds before attempt ``attempts + 1``: ``base * 2**(attempts - 1)``, capped."""
    return float(min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(attempts - 1, 0)))


@dataclass(frozen=True)
class Message:
    delivery_id: str
    url: str
    message_id: str
    body: str
    secret: str


@dataclass(frozen=True)
class Attempt:
    at: datetime
    status_code: int | None
    error: str | None
    seconds: float


def due(session: Session, now: datetime, limit: int = 50) -> list[str]:
    """Deliveries whose job is final and whose next attempt time has come."""
    rows = session.scalars(
        select(WebhookDelivery.id)
        .join(Job, Job.id == WebhookDelivery.job_id)
        .where(
            WebhookDelivery.state.in_(OPEN_STATES),
            Job.status.in_(FINAL),
            or_(WebhookDelivery.next_attempt_at.is_(None), WebhookDelivery.next_attempt_at <= now),
        )
        .order_by(WebhookDelivery.created_at)
        .limit(limit)
    )
    return list(rows)


def claim(session: Session, delivery_id: str, now: datetime, hold: float) -> Message | None:
    """Take a due delivery for one attempt: its next attempt moves ``hold`` seconds ahead, so a
    sweep that overlaps this one leaves it alone. None when it is no longer due."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.state not in OPEN_STATES:
        return None
    if delivery.next_attempt_at is not None and as_utc(delivery.next_attempt_at) > now:
        return None
    job = session.get(Job, delivery.job_id)
    if job is None or job.status not in FINAL:
        return None
    delivery.state = "pending"
    delivery.next_attempt_at = now + timedelta(seconds=hold)
    body = json.dumps(event(job), separators=(",", ":"))
    return Message(delivery.id, delivery.url, delivery.message_id, body, tenant_secret(session, delivery.tenant))


def send(message: Message, settings: WebhookSettings, client: httpx.Client) -> Attempt:
    """One POST of ``message``; never raises (a failure is an attempt with an error)."""
    at = utcnow()
    started = time.monotonic()
    try:
        check_callback_url(message.url, settings.allowed_hosts)
        response = client.post(
            message.url,
            content=message.body,
            headers=signed_headers(message.secret, message.message_id, message.body, at),
        )
        return Attempt(at, response.status_code, None, round(time.monotonic() - started, 3))
    except CallbackRefused as exc:
        return Attempt(at, None, f"refused: {exc}", round(time.monotonic() - started, 3))
    except httpx.HTTPError as exc:
        return Attempt(at, None, f"{type(exc).__name__}: {exc}"[:300], round(time.monotonic() - started, 3))


def record(session: Session, delivery_id: str, attempt: Attempt, settings: WebhookSettings) -> str:
    """Write an attempt down and decide what follows; returns the delivery's new state."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        return "gone"
    delivery.attempts += 1
    delivery.log = [
        *delivery.log,
        {
            "at": attempt.at.isoformat().replace("+00:00", "Z"),
            "status_code": attempt.status_code,
            "error": attempt.error,
            "seconds": attempt.seconds,
        },
    ]
    code = attempt.status_code
    if code is not None and 200 <= code < 300:
        delivery.state, delivery.next_attempt_at = "delivered", None
    elif code == 410:
        delivery.state, delivery.next_attempt_at = "stopped", None
    elif delivery.attempts >= settings.max_attempts:
        delivery.state, delivery.next_attempt_at = "gave_up", None
    else:
        delivery.state = "pending"
        delivery.next_attempt_at = attempt.at + timedelta(seconds=backoff(delivery.attempts, settings))
    return delivery.state


def deliver_due(
    sessions: sessionmaker[Session], settings: WebhookSettings, *, transport: httpx.BaseTransport | None = None
) -> int:
    """One sweep: every due delivery gets one attempt. Returns how many were attempted."""
    with session_scope(sessions) as session:
        ids = due(session, utcnow())
    if not ids:
        return 0
    attempted = 0
    timeout = httpx.Timeout(settings.timeout_seconds)
    with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as client:
        for delivery_id in ids:
            with session_scope(sessions) as session:
                message = claim(session, delivery_id, utcnow(), hold=settings.timeout_seconds + 30)
            if message is None:
                continue
            attempt = send(message, settings, client)
            with session_scope(sessions) as session:
                state = record(session, delivery_id, attempt, settings)
            attempted += 1
            log.info(
                "webhook.attempt",
                delivery_id=delivery_id,
                status_code=attempt.status_code,
                error=attempt.error,
                state=state,
            )
    return attempted


def view(delivery: WebhookDelivery) -> dict[str, Any]:
    """The job resource's ``webhook`` field: where, how far, and every attempt."""
    return {
        "url": delivery.url,
        "id": delivery.message_id,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_at": as_utc(delivery.next_attempt_at).isoformat().replace("+00:00", "Z")
        if delivery.next_attempt_at
        else None,
        "deliveries": list(delivery.log),
    }
