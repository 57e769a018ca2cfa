"""Reading a JSON object into a frozen dataclass: one rule for every type of the stage contract.

A key that is missing or null keeps the field's default; keys the class has no field for
are ignored (a newer writer may add some); ``derived`` values (parsed or nested objects)
replace what the object had under their names. Stdlib only: the stage package runs in
every toolchain environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def present(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys of ``raw`` whose value is not null (an empty dict for anything not a mapping)."""
    return {key: value for key, value in raw.items() if value is not None} if isinstance(raw, Mapping) else {}


def read_fields(cls: type[T], source: Mapping[str, Any] | None, /, **derived: Any) -> T:
    """``cls`` (a dataclass) built from ``source``'s values for its fields, then ``derived``'s
    (a null in either keeps the field's default)."""
    known = {item.name for item in fields(cls)}  # type: ignore[arg-type]
    values = {key: value for key, value in present(source).items() if key in known}
    values.update(present(derived))
    return cls(**values)


def nested(raw: Any, *path: str) -> Any:
    """The value at ``path`` inside nested JSON objects; None where a step is missing or not an object."""
    for key in path:
        if not isinstance(raw, Mapping):
            return None
        raw = raw.get(key)
    return raw


def finite_json(value: Any) -> Any:
    """``value`` (JSON-shaped: dicts, lists, scalars) with every NaN or infinite float made None.

    A stage's numbers may be non-finite (an error over a scale of 0; a channel whose float32
    range is 0 in ``error_sources``) and Python's ``json`` writes and reads them as
    ``NaN``/``Infinity``, which strict JSON (RFC 8259), PostgreSQL's ``json`` type and the
    API's responses refuse. The worker applies this to every stage result it reads, and the
    report to itself."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value
