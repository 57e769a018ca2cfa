"""Shared FastAPI dependencies, as Annotated aliases.

Database work never runs on the event loop. Reads go through ``SessionDep`` (sync routes
run in the thread pool; the read-only engine never waits for SQLite's write lock). A
write is one short transaction in one thread, opened on ``WritesDep`` with
``session_scope`` inside a sync route (or inside ``run_in_threadpool`` from an async
one): flush, commit and the after-commit callbacks happen in that thread, where a
dependency's teardown would run in another, later, while the write lock is held.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from app.core.codes import ErrorCode
from app.core.errors import Forbidden, InvalidRequest, Unauthorized
from app.services import keys
from domain.config import Settings
from domain.db import session_scope
from domain.storage import ObjectStore

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """The request's read session: committed when the route returns, before the response is
    sent (scope="function"), rolled back on error. Never for writes: see the module doc."""
    with session_scope(request.app.state.sessions) as session:
        yield session


def get_writes(request: Request) -> sessionmaker[Session]:
    """The write sessions (``BEGIN IMMEDIATE`` on SQLite): use with ``session_scope``."""
    return request.app.state.writes


def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


def get_celery(request: Request) -> Celery:
    """The API's Celery client (made in the lifespan): sends stages, runs none."""
    return request.app.state.celery


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
WritesDep = Annotated[sessionmaker[Session], Depends(get_writes)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


@dataclass(frozen=True)
class Caller:
    key_id: str
    tenant: str
    is_admin: bool


def get_caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Caller:
    """The key's owner. Its own short read session, closed before the route runs, so a
    request that uploads for minutes holds no pooled connection meanwhile."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'", code=ErrorCode.MISSING_API_KEY)
    with request.app.state.sessions() as session:
        key = keys.authenticate(session, credentials.credentials)
        if key is None:
            raise Unauthorized("the API key is unknown or revoked", code=ErrorCode.INVALID_API_KEY)
        return Caller(key_id=key.id, tenant=key.tenant, is_admin=key.is_admin)


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Forbidden("this route needs an admin key", code=ErrorCode.ADMIN_REQUIRED)
    return caller


AdminDep = Annotated[Caller, Depends(get_admin)]


def reject_unknown_query(request: Request) -> None:
    """422 ``unknown_parameter`` for a query parameter a ``/v1`` route that takes query parameters
    does not take, so a typo such as ``?statuss=failed`` is an error instead of a silently
    unfiltered answer. Installed on the app; the page and netron's viewer (``/``,
    ``/netron/?url=…``) keep their own query strings."""
    if not request.url.path.startswith("/v1/"):
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(route, dependant)
    unknown = sorted(set(request.query_params.keys()) - known)
    # A route that takes no query parameter has none to misspell: a cache-buster such as netron's
    # ``?cb=<time>`` on an artifact download is let through.
    if unknown and known:
        raise InvalidRequest(
            f"unknown query parameter(s) {unknown}; this route takes: {', '.join(sorted(known))}",
            code=ErrorCode.UNKNOWN_PARAMETER,
        )


def _query_names(route: object, dependant: Any) -> frozenset[str]:
    """The query parameters ``route`` and its dependencies take, worked out once per route (kept
    on the route object: routes are made with their app and live as long as it)."""
    names: frozenset[str] | None = getattr(route, "_modelport_query_names", None)
    if names is None:
        found: set[str] = set()
        pending = [dependant]
        while pending:
            current = pending.pop()
            found |= {param.alias for param in current.query_params}
            pending.extend(current.dependencies)
        names = frozenset(found)
        setattr(route, "_modelport_query_names", names)  # noqa: B010 - an attribute of our own on FastAPI's route
    return names
