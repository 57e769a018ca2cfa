from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.core.errors import BY_STATUS


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
    The description of each status is its error class's (``app.core.errors.BY_STATUS``).
    """
    schema = Problem.model_json_schema()
    return {
        status: {
            "description": BY_STATUS[status].description if status in BY_STATUS else "Error",
            "content": {"application/problem+json": {"schema": schema}},
        }
        for status in statuses
    }
