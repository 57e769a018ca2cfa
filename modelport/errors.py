"""The client's exceptions: one class per HTTP status of the API's problems, each carrying the problem's
stable ``code``, and the client's own failures (a digest that does not match, a wait that timed out).

Catch :class:`ModelPortError` for anything the client raises, :class:`APIError` for an answer of the API,
and branch on ``error.code`` (``invalid_spec``, ``unsafe_model``, ``report_not_ready``…; docs/api.md lists
them) rather than on the message.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx


class ModelPortError(Exception):
    """Anything the ModelPort client raises."""


class ConfigurationError(ModelPortError):
    """The client cannot be set up as asked (no API key given nor in ``MODELPORT_API_KEY``)."""


class APIError(ModelPortError):
    """An error answer of the API: RFC 9457 problem+json, or a non-problem answer of a proxy in between.

    ``status`` is the HTTP status; ``code`` the problem's stable code (``http_<status>`` when the answer was
    not a problem); ``title`` and ``detail`` its text; ``problem`` the whole problem body, with the members
    some problems add (``job_status``, ``job_error``, ``stage_state``, ``expired_at``, ``errors``…);
    ``request_id`` the ``X-Request-ID`` to quote to the operator; ``retry_after`` the seconds the API asked to
    wait (429, 503), or None.
    """

    status_code: ClassVar[int | None] = None

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str = "",
        problem: dict[str, Any] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.problem: dict[str, Any] = problem or {}
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Spec validation errors (``invalid_spec``): ``[{"loc": [...], "msg": ...}, ...]``; empty otherwise."""
        return list(self.problem.get("errors") or [])


class BadRequest(APIError):
    status_code = 400


class AuthenticationError(APIError):
    """401: the API key is missing, wrong or revoked."""

    status_code = 401


class PermissionDenied(APIError):
    """403: the key may not do this (an admin route with a tenant's key)."""

    status_code = 403


class NotFound(APIError):
    """404: no such job, artifact or log for this key's tenant, or a final "never produced"
    (``report_not_produced``)."""

    status_code = 404


class Conflict(APIError):
    """409: not yet (``report_not_ready``, ``log_not_ready``), or a state that forbids it (``job_finished``)."""

    status_code = 409


class Gone(APIError):
    """410: removed under the retention policy (``artifact_expired``, ``report_expired``)."""

    status_code = 410


class PayloadTooLarge(APIError):
    status_code = 413


class UnsupportedMediaType(APIError):
    status_code = 415


class InvalidRequest(APIError):
    """422: the API refused the submission or the parameters (``invalid_spec``, ``unsafe_model``,
    ``unrecognized_format``, ``architecture_not_allowed``…)."""

    status_code = 422


class RateLimited(APIError):
    """429: too many requests; retried by the client as long as its retry budget lasts."""

    status_code = 429


class ServerError(APIError):
    """5xx: the service failed or a dependency is down."""


class ServiceUnavailable(ServerError):
    """503 (``database_busy``, ``unavailable``): the request changed nothing; retried by the client."""

    status_code = 503


class DigestMismatch(ModelPortError):
    """A downloaded file whose size or sha256 is not the one the API lists; the partial file is removed."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        super().__init__(f"{name}: expected {expected}, got {actual}")
        self.name = name
        self.expected = expected
        self.actual = actual


class WaitTimeout(ModelPortError, TimeoutError):
    """``Job.wait`` gave up: the job was still ``status`` after ``timeout`` seconds (it goes on running)."""

    def __init__(self, job_id: str, status: str, timeout: float) -> None:
        super().__init__(f"job {job_id} is still {status} after {timeout:g} s")
        self.job_id = job_id
        self.status = status
        self.timeout = timeout


_BY_STATUS: dict[int, type[APIError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        AuthenticationError,
        PermissionDenied,
        NotFound,
        Conflict,
        Gone,
        PayloadTooLarge,
        UnsupportedMediaType,
        InvalidRequest,
        RateLimited,
        ServiceUnavailable,
    )
    if cls.status_code is not None
}

RETRYABLE: tuple[type[APIError], ...] = (RateLimited, ServiceUnavailable)


def _retry_after(response: httpx.Response) -> float | None:
    # Only the delay-seconds form: the API sends seconds, and a date from a proxy is rare enough.
    value = response.headers.get("Retry-After", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_response(response: httpx.Response) -> APIError:
    """The typed exception for an error answer (status >= 400). The body must have been read."""
    status = response.status_code
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) and isinstance(body.get("code"), str) else {}
    if problem:
        code, title = problem["code"], str(problem.get("title", ""))
        detail = str(problem.get("detail", title))
    else:
        code, title = f"http_{status}", response.reason_phrase
        detail = response.text.strip()[:500] or response.reason_phrase
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(
        status,
        code,
        detail,
        title=title,
        problem=problem,
        request_id=response.headers.get("X-Request-ID"),
        retry_after=_retry_after(response),
    )
