"""Submission refusals (422 before a job exists): code, a detail that says what to do,
no job row and no stored object. Models are a few hand-made bytes the sniffer knows, so
no framework is needed."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from app.main import create_app
from domain.config import ConversionSettings, Settings
from domain.models import Job
from tests.support.api import assert_problem

# A safetensors file (sniffed as a state dict) and the first bytes of an ONNX ModelProto
# (ir_version 9, then producer_name): what the sniffer reads, nothing a stage would load.
SAFETENSORS = (lambda h: struct.pack("<Q", len(h)) + h + b"\0" * 4)(
    json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
)
ONNX = b"\x08\x09\x12\x07pytorch" + b"\0" * 64
STATE_DICT_SPEC: dict[str, Any] = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
}


def job_rows(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(Job)) or 0
    finally:
        engine.dispose()


def stored_files(settings: Settings) -> list[Path]:
    root = settings.storage_root
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_refused_and_nothing_kept(  # type: ignore[no-untyped-def]
    response, code: str, detail_says: str, db_url: str, settings: Settings
) -> dict[str, Any]:
    body = assert_problem(response, 422, code)
    assert detail_says in body["detail"], body
    assert job_rows(db_url) == 0
    assert stored_files(settings) == []
    return body


def post(client: TestClient, auth: dict[str, str], files: Any) -> httpx.Response:
    return client.post("/v1/jobs", headers=auth, files=files)


@pytest.mark.parametrize(
    ("model", "spec", "code", "detail_says"),
    [
        (
            ONNX,
            {"toolchain": "litert-torch", "targets": ["tflite"]},
            "toolchain_unavailable",
            "litert-torch needs a PyTorch module",
        ),
        (
            SAFETENSORS,
            {**STATE_DICT_SPEC, "callback_url": "http://10.0.0.1/hook"},
            "callback_url_refused",
            "webhooks only call public addresses unless the operator allows the host",
        ),
        (ONNX, {"quantization": ["int8"], "targets": ["onnx"]}, "unsupported_option", "add 'tflite' to targets"),
        (
            ONNX,
            {"architecture": {"name": "torchvision.models.resnet18"}},
            "unsupported_option",
            "this upload is 'onnx', which carries its own model: drop 'architecture'",
        ),
        (
            SAFETENSORS,
            {**STATE_DICT_SPEC, "architecture": {"name": "resnet18"}},
            "invalid_spec",
            "'torchvision.models.resnet18' for a torchvision model, 'transformers.resnet18' for a transformers",
        ),
    ],
)
def test_spec_refusals(
    client: TestClient,
    auth: dict[str, str],
    db_url: str,
    settings: Settings,
    model: bytes,
    spec: dict[str, Any],
    code: str,
    detail_says: str,
) -> None:
    response = post(client, auth, {"model": ("m.bin", model), "spec": (None, json.dumps(spec))})
    assert_refused_and_nothing_kept(response, code, detail_says, db_url, settings)


@pytest.fixture
def onnx_tf_only(db_url: str, settings: Settings) -> Iterator[tuple[TestClient, Settings]]:
    """A server whose operator enabled the onnx-tf converter only."""
    narrow = settings.model_copy(update={"conversion": ConversionSettings(enabled_toolchains=["onnx-tf"])})
    with TestClient(create_app(narrow)) as test_client:
        yield test_client, narrow


def test_a_toolchain_the_operator_did_not_enable_is_refused(
    onnx_tf_only: tuple[TestClient, Settings], auth: dict[str, str], db_url: str
) -> None:
    client, settings = onnx_tf_only
    spec = {"toolchain": "onnx2tf", "targets": ["tflite"]}
    response = post(client, auth, {"model": ("m.onnx", ONNX), "spec": (None, json.dumps(spec))})
    body = assert_refused_and_nothing_kept(
        response, "toolchain_unavailable", "'onnx2tf' is not enabled", db_url, settings
    )
    assert "enabled: onnx-tf" in body["detail"]
    # The same upload with the enabled toolchain is accepted: the refusal was about onnx2tf.
    spec = {"toolchain": "onnx-tf", "targets": ["tflite"]}
    assert post(client, auth, {"model": ("m.onnx", ONNX), "spec": (None, json.dumps(spec))}).status_code == 202


def test_no_model_part_is_model_required(
    client: TestClient, auth: dict[str, str], db_url: str, settings: Settings
) -> None:
    response = post(client, auth, {"spec": (None, json.dumps(STATE_DICT_SPEC))})
    assert_refused_and_nothing_kept(response, "model_required", "'model' file part is required", db_url, settings)


def test_the_spec_field_twice_is_duplicate_field(
    client: TestClient, auth: dict[str, str], db_url: str, settings: Settings
) -> None:
    spec = json.dumps(STATE_DICT_SPEC)
    files = [("model", ("m.safetensors", SAFETENSORS)), ("spec", (None, spec)), ("spec", (None, spec))]
    response = post(client, auth, files)
    assert_refused_and_nothing_kept(response, "duplicate_field", "'spec' was sent twice", db_url, settings)


def multipart_body(spec: dict[str, Any], model: bytes) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://testserver/v1/jobs", files={"spec": (None, json.dumps(spec)), "model": ("m", model)}
    )
    return request.read(), request.headers["content-type"]


@pytest.mark.parametrize(
    ("keep", "detail_says"),
    [
        # Cut inside the model's bytes: the object being written must not stay behind.
        (lambda body, model_at: model_at + 100, "in part 'model'"),
        # Every byte of the model sent, only the closing boundary's final "--" missing.
        (lambda body, model_at: len(body) - len(b"--\r\n"), "before its closing boundary"),
        (lambda body, model_at: 0, "ended early"),
    ],
    ids=["inside-the-model", "before-the-closing-boundary", "empty"],
)
def test_a_cut_multipart_body_is_malformed_multipart(
    client: TestClient, auth: dict[str, str], db_url: str, settings: Settings, keep: Any, detail_says: str
) -> None:
    model = SAFETENSORS + b"\0" * 4000
    body, content_type = multipart_body(STATE_DICT_SPEC, model)
    cut = body[: keep(body, body.index(model))]
    response = client.post("/v1/jobs", headers={**auth, "Content-Type": content_type}, content=cut)
    assert_refused_and_nothing_kept(response, "malformed_multipart", detail_says, db_url, settings)
    assert "send the whole request again" in response.json()["detail"]
    # The whole body is accepted: the refusal was about the cut.
    whole = client.post("/v1/jobs", headers={**auth, "Content-Type": content_type}, content=body)
    assert whole.status_code == 202, whole.text


def test_a_calibration_part_without_int8_is_unsupported_option(
    client: TestClient, auth: dict[str, str], db_url: str, settings: Settings
) -> None:
    # Before, the part was stored and silently never read (only int8 calibrates).
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 1, 3, 8, 8), np.float32))  # a usable file: the refusal is about int8
    calibration = ("calib.npy", buffer.getvalue())
    spec = {"targets": ["tflite"], "quantization": ["float32", "dynamic_range"]}
    files = {"model": ("m.onnx", ONNX), "spec": (None, json.dumps(spec)), "calibration": calibration}
    response = post(client, auth, files)
    assert_refused_and_nothing_kept(
        response, "unsupported_option", "add 'int8' to quantization, or drop the 'calibration' part", db_url, settings
    )
    assert "['float32', 'dynamic_range']" in response.json()["detail"]


def test_strict_quantization_is_not_refused_at_submission(client: TestClient, auth: dict[str, str]) -> None:
    # docs/api.md: whether a precision can be produced is known only once the quantizer
    # tried it, so strict: true is judged by the report, not refused as precision_unavailable.
    spec = {"targets": ["tflite"], "quantization": ["float32", "dynamic_range", "float16", "int8"], "strict": True}
    response = post(client, auth, {"model": ("m.onnx", ONNX), "spec": (None, json.dumps(spec))})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["spec"]["strict"] is True
    assert job["spec"]["quantization"] == ["float32", "dynamic_range", "float16", "int8"]
    assert [s["name"] for s in job["stages"]][-2:] == ["quantize", "report"]
