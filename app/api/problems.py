"""OpenAPI declarations of the problem+json responses of a route (FastAPI side of ``Problem``)."""

from __future__ import annotations

from typing import Any

from app.core.errors import BY_STATUS
from modelport.schemas.problem import Problem


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
