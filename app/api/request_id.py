"""The request id: echoed from the client's X-Request-ID or made here, on every response.

A plain ASGI middleware, so the header is set on the response-start message itself, for
every response its inner app sends, streamed ones included. The one response it cannot
see is Starlette's answer to an unhandled exception (ServerErrorMiddleware sits outside
all user middleware): that handler sets the header itself from ``request_id_of``.
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
STATE_KEY = "request_id"
# A client's id is echoed when it is a plain token of sane length; anything else (header
# or log injection, megabyte headers) is replaced by one made here.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,200}")


def request_id_of(request: Request) -> str | None:
    """The id the middleware gave this request (None outside it)."""
    return getattr(request.state, STATE_KEY, None)


class RequestIdMiddleware:
    """Puts the id on ``request.state.request_id``, binds it to structlog's context for the
    request's logs, and sets ``X-Request-ID`` on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = Request(scope).headers.get(REQUEST_ID_HEADER, "")
        rid = sent if _CLIENT_ID.fullmatch(sent) else uuid.uuid4().hex
        # request.state lives in scope["state"]: every Request made from this scope sees it.
        scope.setdefault("state", {})[STATE_KEY] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=rid):
            await self.app(scope, receive, send_with_id)
