"""RFC 9457 problem details as the API answers them and the client reads them."""

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
