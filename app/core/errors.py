"""Domain errors, each with a status and a stable code; rendered once as RFC 9457 problem+json.

The classes are the one table of statuses: each carries its status, its generic code, the
problem's ``title`` and the OpenAPI ``description`` of that status (``BY_STATUS``). The
handlers in ``app.api.errors`` render the framework's own errors with the same titles.
"""

from __future__ import annotations

from typing import Any, ClassVar

from app.core.codes import ErrorCode


class ModelPortError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[ErrorCode] = ErrorCode.BAD_REQUEST
    title: ClassVar[str] = "Bad request"
    description: ClassVar[str] = "Malformed request"

    def __init__(self, detail: str, *, code: ErrorCode | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.instance_code = code or self.code
        self.extra = extra


class Unauthorized(ModelPortError):
    status, code, title = 401, ErrorCode.UNAUTHORIZED, "Unauthorized"
    description = "Missing or invalid API key"


class Forbidden(ModelPortError):
    status, code, title = 403, ErrorCode.FORBIDDEN, "Forbidden"
    description = "The key may not do this"


class NotFound(ModelPortError):
    status, code, title = 404, ErrorCode.NOT_FOUND, "Not found"
    description = "No such resource for this tenant"


class MethodNotAllowed(ModelPortError):
    status, code, title = 405, ErrorCode.METHOD_NOT_ALLOWED, "Method not allowed"
    description = "The route does not take this method"


class NotAcceptable(ModelPortError):
    status, code, title = 406, ErrorCode.NOT_ACCEPTABLE, "Not acceptable"
    description = "No representation matches the Accept header"


class Conflict(ModelPortError):
    status, code, title = 409, ErrorCode.CONFLICT, "Conflict"
    description = "Conflict with the resource's current state"


class Expired(ModelPortError):
    """A file the retention removed: the job and its listing stay, the bytes are gone."""

    status, code, title = 410, ErrorCode.EXPIRED, "Gone"
    description = "Removed under the retention policy"


class PayloadTooLarge(ModelPortError):
    status, code, title = 413, ErrorCode.PAYLOAD_TOO_LARGE, "Payload too large"
    description = "Upload over the configured maximum"


class UnsupportedMediaType(ModelPortError):
    status, code, title = 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Unsupported media type"
    description = "Unsupported media type"


class InvalidRequest(ModelPortError):
    """A request the server understood but cannot act on (422)."""

    status, code, title = 422, ErrorCode.VALIDATION_ERROR, "Unprocessable request"
    description = "The request cannot be processed as sent"


class InternalError(ModelPortError):
    status, code, title = 500, ErrorCode.INTERNAL_ERROR, "Internal server error"
    description = "An unexpected error; the X-Request-ID header names the request"


class ServiceUnavailable(ModelPortError):
    status, code, title = 503, ErrorCode.UNAVAILABLE, "Service unavailable"
    description = "A dependency is unavailable"


# status -> the class of that status: its generic code, title and OpenAPI description.
BY_STATUS: dict[int, type[ModelPortError]] = {
    cls.status: cls
    for cls in (
        ModelPortError,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        NotAcceptable,
        Conflict,
        Expired,
        PayloadTooLarge,
        UnsupportedMediaType,
        InvalidRequest,
        InternalError,
        ServiceUnavailable,
    )
}

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_body(status: int, code: ErrorCode, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"https://modelport.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body
