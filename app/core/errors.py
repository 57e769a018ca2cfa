"""Domain errors, each with a status and a stable code; rendered once as RFC 9457 problem+json."""

from __future__ import annotations

from typing import Any, ClassVar


class ModelPortError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.instance_code = code or self.code
        self.extra = extra


class Unauthorized(ModelPortError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(ModelPortError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(ModelPortError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ModelPortError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ModelPortError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(ModelPortError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class InvalidRequest(ModelPortError):
    """A request the server understood but cannot act on (422)."""

    status, code, title = 422, "invalid_request", "Unprocessable request"


class ServiceUnavailable(ModelPortError):
    status, code, title = 503, "unavailable", "Service unavailable"


PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_body(status: int, code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"https://modelport.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body
