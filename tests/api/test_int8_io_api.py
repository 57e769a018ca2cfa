"""The spec's ``int8_io`` at submission: only with the int8 precision (422 otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.api import SPEC, assert_problem, submit

TFLITE_ONLY = {**SPEC, "targets": ["tflite"]}


@pytest.mark.parametrize(
    "quantization",
    [None, ["float32"], ["float32", "dynamic_range", "float16"]],
    ids=["default", "float32", "no-int8"],
)
def test_int8_io_without_int8_is_a_422(
    client: TestClient, auth: dict[str, str], squeezenet_pth: Path, quantization: list[str] | None
) -> None:
    spec = {**TFLITE_ONLY, "int8_io": True}
    if quantization is not None:
        spec["quantization"] = quantization
    body = assert_problem(submit(client, auth, squeezenet_pth.read_bytes(), spec), 422, "invalid_spec")
    assert "int8_io" in body["detail"]
    assert "add 'int8' to quantization" in body["detail"]
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []


def test_int8_io_with_int8_is_accepted(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    spec = {**TFLITE_ONLY, "quantization": ["float32", "int8"], "int8_io": True}
    response = submit(client, auth, squeezenet_pth.read_bytes(), spec)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["spec"]["int8_io"] is True  # the quantize stage reads it from the spec
    assert "quantize" in [stage["name"] for stage in job["stages"]]


def test_int8_io_defaults_to_false(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    response = submit(client, auth, squeezenet_pth.read_bytes(), {**TFLITE_ONLY, "quantization": ["int8"]})
    assert response.status_code == 202, response.text
    assert response.json()["spec"]["int8_io"] is False


def test_int8_io_must_be_a_boolean(client: TestClient, auth: dict[str, str], squeezenet_pth: Path) -> None:
    spec = {**TFLITE_ONLY, "quantization": ["int8"], "int8_io": "sometimes"}
    body = assert_problem(submit(client, auth, squeezenet_pth.read_bytes(), spec), 422, "invalid_spec")
    assert body["errors"][0]["loc"] == "int8_io"
