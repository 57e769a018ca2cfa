from __future__ import annotations

import re

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field, field_validator

from app.api.deps import AdminDep, WritesDep
from app.api.problems import problem_responses
from app.core.codes import ErrorCode
from app.core.errors import NotFound
from app.services import keys
from domain.db import session_scope
from domain.models import ApiKey

router = APIRouter(prefix="/v1/admin", tags=["admin"])


TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class KeyCreate(BaseModel):
    # The pattern is documented for clients (and schema-driven tests); the validator enforces it
    # with a readable message.
    tenant: str = Field(min_length=1, max_length=100, json_schema_extra={"pattern": TENANT_PATTERN})
    admin: bool = False
    label: str | None = Field(default=None, max_length=200)

    @field_validator("tenant")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(TENANT_PATTERN, value):
            raise ValueError("letters, digits, '.', '_' and '-' only")
        return value


class KeyCreated(BaseModel):
    key: str
    id: str
    tenant: str
    admin: bool


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreated,
    responses=problem_responses(400, 401, 403, 422, 503),
    summary="Create an API key (the secret is shown once)",
)
def create_key(body: KeyCreate, caller: AdminDep, writes: WritesDep) -> KeyCreated:
    with session_scope(writes) as session:
        key, secret = keys.create_key(session, body.tenant, is_admin=body.admin, label=body.label)
        return KeyCreated(key=secret, id=key.id, tenant=key.tenant, admin=key.is_admin)


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 422, 503),
    summary="Revoke an API key",
)
def revoke_key(key_id: str, caller: AdminDep, writes: WritesDep) -> Response:
    with session_scope(writes) as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise NotFound(f"no API key {key_id!r}", code=ErrorCode.KEY_NOT_FOUND)
        keys.revoke(session, key)
    return Response(status_code=204)
