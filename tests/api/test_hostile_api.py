"""Submission of hostile and broken uploads: a 422 problem with a stable code, and no job.

The files are the stage tests' (tests/stages/test_hostile.py): tiny real torch archives
written by the torch environment, then cut, forged or replaced. What only loading can
tell (a flipped byte inside a member) is the stage's to refuse.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.errors import InvalidRequest
from app.services.sniff import MAX_UNPACKED_BYTES, UNPACK_FLOOR_BYTES, sniff_format
from domain.config import Settings
from modelport.schemas.spec import MAX_INPUT_ELEMENTS
from tests.support.hostile_files import HUGE_SHAPE, MAKE_MODELS, MiB, hostile_files
from tests.support.stage_runner import make_torch_models

IMAGE = [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}]
SQUEEZENET = {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("hostile-api-models")
    real = make_torch_models(MAKE_MODELS, out / "real")
    return {**real, **hostile_files(real, out / "hostile")}


def spec_for(model_format: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model_format": model_format, "inputs": IMAGE}
    if model_format in ("state_dict", "auto"):
        spec["architecture"] = SQUEEZENET
    return {**spec, **changes}


def submit(client: TestClient, auth: dict[str, str], model: bytes, spec: dict[str, Any] | str) -> Any:
    return client.post(
        "/v1/jobs",
        headers=auth,
        data={"spec": spec if isinstance(spec, str) else json.dumps(spec)},
        files={"model": ("model.bin", model)},
    )


def assert_refused(client: TestClient, auth: dict[str, str], settings: Settings, response: Any, code: str) -> dict:
    """A 422 problem with ``code``; no job was created and nothing of the upload is kept."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict = response.json()
    assert body["code"] == code, body
    assert body["detail"]
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []
    uploads = settings.storage_root / "uploads"
    assert not uploads.exists() or not any(path.is_file() for path in uploads.rglob("*"))
    return body


@pytest.mark.parametrize(
    ("file", "model_format", "code"),
    [
        ("torchscript_truncated", "torchscript", "unrecognized_format"),
        ("program_truncated", "exported_program", "unrecognized_format"),
        ("state_dict_truncated", "auto", "unrecognized_format"),
        ("png", "torchscript", "unrecognized_format"),
        ("png", "onnx", "unrecognized_format"),
        ("noise", "onnx", "unrecognized_format"),
        ("empty", "torchscript", "empty_model"),
        ("state_dict_bomb", "auto", "archive_too_large"),
        ("torchscript_64gib", "torchscript", "archive_too_large"),
    ],
)
def test_hostile_uploads_are_refused_at_submission(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    models: dict[str, Path],
    file: str,
    model_format: str,
    code: str,
) -> None:
    response = submit(client, auth, models[file].read_bytes(), spec_for(model_format))
    assert_refused(client, auth, settings, response, code)


@pytest.mark.parametrize(
    ("shape", "count"),
    [
        (HUGE_SHAPE, "declares 30000000000 elements"),
        (["batch", *HUGE_SHAPE], "declares 30000000000 elements"),
        ([10**40, 10**40], "declares more than 10^20 elements"),  # not spelled out
    ],
)
def test_huge_input_shapes_are_refused_before_any_work(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    models: dict[str, Path],
    shape: list[Any],
    count: str,
) -> None:
    spec = spec_for("torchscript", inputs=[{"name": "input", "shape": shape, "dtype": "float32"}])
    body = assert_refused(
        client, auth, settings, submit(client, auth, models["torchscript"].read_bytes(), spec), "invalid_spec"
    )
    assert body["errors"] == [{"loc": "inputs.0.shape", "message": body["errors"][0]["message"]}]
    assert count in body["errors"][0]["message"]
    assert f"the limit is {MAX_INPUT_ELEMENTS}" in body["errors"][0]["message"]


def test_the_real_archives_pass_the_bomb_check(models: dict[str, Path]) -> None:
    # torchscript code members are deflated; the rest is stored, as torch writes it.
    expected = {"torchscript": "torchscript", "program": "exported_program", "state_dict": "state_dict_or_module"}
    for name, sniffed in expected.items():
        with models[name].open("rb") as handle:
            assert sniff_format(handle) == sniffed


def _archive(**members: tuple[int, int]) -> io.BytesIO:
    """A torch-looking zip: name -> (bytes of zeros, compression method)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, (size, method) in members.items():
            archive.writestr(zipfile.ZipInfo(f"m/{name}"), bytes(size), compress_type=method)
    buffer.seek(0)
    return buffer


def test_the_bomb_check_reads_the_declared_sizes_against_the_file() -> None:
    stored = zipfile.ZIP_STORED
    deflated = zipfile.ZIP_DEFLATED
    # Highly compressible but small: harmless, whatever the ratio.
    assert sniff_format(_archive(**{"data.pkl": (10, stored), "data/0": (UNPACK_FLOOR_BYTES // 2, deflated)})) == (
        "state_dict_or_module"
    )
    with pytest.raises(InvalidRequest) as refused:
        sniff_format(_archive(**{"data.pkl": (10, stored), "data/0": (UNPACK_FLOOR_BYTES + MiB, deflated)}))
    assert refused.value.instance_code == "archive_too_large"
    assert str(MAX_UNPACKED_BYTES) in refused.value.detail


def test_a_central_directory_with_a_damaged_version_is_not_recognised() -> None:
    # zipfile raises NotImplementedError for an "extract version" it does not know.
    data = bytearray(_archive(**{"data.pkl": (10, zipfile.ZIP_STORED)}).getvalue())
    central = data.index(b"PK\x01\x02")
    data[central + 6 : central + 8] = (99).to_bytes(2, "little")
    assert sniff_format(io.BytesIO(bytes(data))) is None


def test_a_dimension_too_long_to_parse_is_a_422(
    client: TestClient, auth: dict[str, str], settings: Settings, models: dict[str, Path]
) -> None:
    spec = json.dumps(spec_for("torchscript")).replace("[1, 3, 64, 64]", "[" + "9" * 5000 + "]")
    assert_refused(
        client, auth, settings, submit(client, auth, models["torchscript"].read_bytes(), spec), "invalid_spec"
    )
