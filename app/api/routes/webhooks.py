"""The tenant's webhook signing secret (Standard Webhooks): read it, rotate it."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import CallerDep, WritesDep
from app.api.problems import problem_responses
from domain import webhooks
from domain.db import session_scope

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class WebhookSecretOut(BaseModel):
    secret: str = Field(
        description="whsec_ + base64 key: verify webhook-signature with it (HMAC-SHA256 over id.timestamp.body)"
    )
    scheme: str = "Standard Webhooks v1 (https://www.standardwebhooks.com)"


@router.get(
    "/secret",
    response_model=WebhookSecretOut,
    responses=problem_responses(401),
    summary="The caller's tenant's webhook signing secret (made on first use)",
)
def get_secret(caller: CallerDep, writes: WritesDep) -> WebhookSecretOut:
    with session_scope(writes) as session:
        return WebhookSecretOut(secret=webhooks.tenant_secret(session, caller.tenant))


@router.post(
    "/secret/rotate",
    response_model=WebhookSecretOut,
    responses=problem_responses(401),
    summary="Replace the tenant's webhook signing secret; later attempts are signed with the new one",
)
def rotate_secret(caller: CallerDep, writes: WritesDep) -> WebhookSecretOut:
    with session_scope(writes) as session:
        return WebhookSecretOut(secret=webhooks.tenant_secret(session, caller.tenant, rotate=True))
