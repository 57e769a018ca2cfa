"""Schemathesis against the OpenAPI document, in process, on both databases.

Every operation gets schema-valid and schema-invalid requests with a valid admin key, and
every answer must be one the document declares: no server error, a documented status, the
documented media type (problem+json for errors) and body schema, 4xx for invalid data, 401
without the key. Bounded and deterministic: a fixed number of derandomized examples.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation.modes import GenerationMode
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.schemas import OpenApiSchema

from app.main import create_app
from tests.support.api import ADMIN_KEY, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
EXAMPLES = 25
# Valid per the document, yet rightly refused: the document cannot say which bytes are a model
# or which strings are JSON job specs, nor which opaque cursors the server issued.
NOT_DESCRIBABLE = {"POST /v1/jobs", "GET /v1/jobs"}
# Answers that last as long as their job: on the seeded job (queued, no worker) they never end.
STREAMS = {"GET /v1/jobs/{job_id}/events"}


def tiny_safetensors() -> bytes:
    """An (empty) safetensors state dict, made without a framework."""
    header = json.dumps({"__metadata__": {"made_by": "test"}}).encode()
    return struct.pack("<Q", len(header)) + header


@pytest.fixture
def api_schema(db_url: str, tmp_path: Path) -> Iterator[OpenApiSchema]:
    settings = make_settings(db_url, tmp_path / "data")
    # No worker runs here, and 503 counts as a server error for schemathesis: /readyz's 503
    # without workers is tested in test_observability.py.
    settings.queue.ready_requires_workers = False
    app = create_app(settings)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        shutdown_lifespans()  # the app's engine and Redis client, started by the first request


def seed(schema: OpenApiSchema) -> dict[str, str]:
    """A real job and a real key, so operations on one resource reach past their 404."""
    spec = {
        "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
        "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
        "targets": ["onnx"],
    }
    with get_client(schema.app) as client:
        job = client.post(
            "/v1/jobs",
            headers=AUTH,
            data={"spec": json.dumps(spec)},
            files={"model": ("model.safetensors", tiny_safetensors())},
        )
        assert job.status_code == 202, job.text
        key = client.post("/v1/admin/keys", headers=AUTH, json={"tenant": "fuzz"})
        assert key.status_code == 201, key.text
    return {"job_id": job.json()["id"], "key_id": key.json()["id"]}


def has_inputs(operation: Any) -> bool:
    return any(len(group) for group in (operation.path_parameters, operation.query, operation.headers, operation.body))


def fuzz(operation: Any, mode: GenerationMode, path_parameters: dict[str, str] | None = None) -> str | None:
    """Run the examples; the failure report, or None."""
    excluded = [positive_data_acceptance] if operation.label in NOT_DESCRIBABLE else []

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the report has a curl line
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=excluded)

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - collected, so one run reports every operation
        where = f" with {path_parameters}" if path_parameters else ""
        return f"{operation.label} ({mode.value}{where}):\n{exc}"
    return None


def test_the_api_answers_only_what_its_document_declares(api_schema: OpenApiSchema) -> None:
    seeded = seed(api_schema)
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15, [o.label for o in operations]
    for operation in operations:
        modes = list(GenerationMode) if has_inputs(operation) else [GenerationMode.POSITIVE]
        # Operations on one resource run twice: on random ids, then on the seeded job or key.
        params = {p.name for p in operation.path_parameters}
        seedable = params & seeded.keys() and operation.label not in STREAMS
        fixed = [None] + ([{k: v for k, v in seeded.items() if k in params}] if seedable else [])
        for mode in modes:
            for path_parameters in fixed:
                failure = fuzz(operation, mode, path_parameters)
                if failure:
                    failures.append(failure)
    assert not failures, "\n\n".join(failures)
