from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    """RFC 9457 problem details, with ModelPort's stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the problem responses a route can return.

    Each is ``application/problem+json`` with the Problem schema, and only that: with
    ``model=`` FastAPI would also declare an ``application/json`` body no error carries.
    Declaring 422 also replaces FastAPI's own (``application/json``, HTTPValidationError),
    which it adds to every route with parameters although the handler renders a problem.
    """
    descriptions = {
        400: "Malformed request",
        401: "Missing or invalid API key",
        403: "The key may not do this",
        404: "No such resource for this tenant",
        409: "Conflict with the resource's current state",
        413: "Upload over the configured maximum",
        415: "Unsupported media type",
        422: "The request cannot be processed as sent",
        503: "A dependency is unavailable",
    }
    schema = Problem.model_json_schema()
    return {
        status: {
            "description": descriptions.get(status, "Error"),
            "content": {"application/problem+json": {"schema": schema}},
        }
        for status in statuses
    }
