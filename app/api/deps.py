"""Shared FastAPI dependencies, as Annotated aliases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Forbidden, Unauthorized
from app.services import keys
from app.storage import ObjectStore

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


AFTER_COMMIT = "after_commit"


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the request's transaction has committed (e.g. enqueue a task)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


def get_session(request: Request) -> Iterator[Session]:
    """The request's one transaction: committed when the route returns, before the response
    is sent (scope="function"), then the after-commit callbacks run; rolled back on error."""
    session = request.app.state.sessions()
    try:
        yield session
        session.commit()
        for callback in session.info.pop(AFTER_COMMIT, []):
            callback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


@dataclass(frozen=True)
class Caller:
    key_id: str
    tenant: str
    is_admin: bool


def get_caller(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'", code="missing_api_key")
    key = keys.authenticate(session, credentials.credentials)
    if key is None:
        raise Unauthorized("the API key is unknown or revoked", code="invalid_api_key")
    return Caller(key_id=key.id, tenant=key.tenant, is_admin=key.is_admin)


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Forbidden("this route needs an admin key", code="admin_required")
    return caller


AdminDep = Annotated[Caller, Depends(get_admin)]
