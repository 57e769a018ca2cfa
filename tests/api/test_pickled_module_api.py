"""``model_format: pickled_module`` at submission: refused (422 ``format_disabled``) unless the
operator sets ``MODELPORT_ENABLE_PICKLED_MODULE``; when enabled it needs ``inputs``, and
``auto`` or ``state_dict`` on the same file still mean a state dict (never unpickled): its pickle
names classes, so it is refused at submission as ``unsafe_model``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import ConversionSettings
from tests.support.api import SPEC, assert_problem, make_settings, submit
from tests.support.toolchain import toolchain_python

INPUTS = [{"name": "image", "shape": ["batch", 3, 16, 16], "dtype": "float32"}]
PICKLED = {"model_format": "pickled_module", "inputs": INPUTS}
# As a state dict the same file needs an architecture; it never gets that far in a stage.
AS_STATE_DICT = {"architecture": SPEC["architecture"], "inputs": INPUTS}

SAVE_MODULE = """
import sys
import torch

model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 5))
torch.save(model, sys.argv[1])
"""


@pytest.fixture(scope="module")
def pickled_module(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real torch.save(model) file, written by the torch environment."""
    path = tmp_path_factory.mktemp("pickled") / "module.pt"
    subprocess.run([str(toolchain_python("torch")), "-c", SAVE_MODULE, str(path)], check=True, timeout=300)
    return path.read_bytes()


def app_client(db_url: str, data_dir: Path, enabled: bool) -> TestClient:
    settings = make_settings(db_url, data_dir)
    settings = settings.model_copy(update={"conversion": ConversionSettings(enable_pickled_module=enabled)})
    return TestClient(create_app(settings))


@pytest.fixture
def enabled(db_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with app_client(db_url, tmp_path / "data", enabled=True) as client:
        yield client


def test_the_switch_is_off_by_default_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_ENABLE_PICKLED_MODULE", raising=False)
    assert ConversionSettings().enable_pickled_module is False
    monkeypatch.setenv("MODELPORT_ENABLE_PICKLED_MODULE", "true")
    assert ConversionSettings().enable_pickled_module is True


def test_disabled_pickled_module_is_a_422(client: TestClient, auth: dict[str, str], pickled_module: bytes) -> None:
    body = assert_problem(submit(client, auth, pickled_module, PICKLED), 422, "format_disabled")
    assert body["detail"] == (
        "pickled modules run code when loaded and are disabled on this server; "
        "upload a state dict with an architecture instead"
    )
    assert client.get("/v1/jobs", headers=auth).json()["items"] == []


def test_enabled_pickled_module_is_accepted(enabled: TestClient, auth: dict[str, str], pickled_module: bytes) -> None:
    response = submit(enabled, auth, pickled_module, PICKLED)
    assert response.status_code == 202, response.text
    job = response.json()
    spec: dict[str, Any] = job["spec"]
    assert spec["model_format"] == "pickled_module"
    assert spec["inputs"] == [{**INPUTS[0], "range": None}]
    assert spec["architecture"] is None
    assert spec["toolchain"] == "auto"
    assert spec["targets"] == ["onnx", "saved_model", "tflite"]
    assert spec["tolerance"]["float32"] == 1e-4
    assert spec["available_toolchains"] == ["onnx-tf", "onnx2tf", "litert-torch"]
    # A pickled module is a PyTorch module: litert-torch is a candidate, as for a state dict.
    stages = [stage["name"] for stage in job["stages"]]
    assert stages[0] == "export_onnx"
    assert {"convert_onnx2tf", "convert_litert_torch", "convert_onnx_tf"} <= set(stages)
    assert stages.index("convert_onnx2tf") < stages.index("convert_litert_torch") < stages.index("convert_onnx_tf")


def test_enabled_pickled_module_needs_inputs(enabled: TestClient, auth: dict[str, str], pickled_module: bytes) -> None:
    body = assert_problem(
        submit(enabled, auth, pickled_module, {"model_format": "pickled_module"}), 422, "inputs_required"
    )
    assert "pickled_module upload needs 'inputs'" in body["detail"]


@pytest.mark.parametrize("model_format", ["auto", "state_dict"])
def test_enabled_switch_leaves_state_dicts_alone(
    enabled: TestClient, auth: dict[str, str], pickled_module: bytes, model_format: str
) -> None:
    # The same bytes, not declared as a pickled module, are read as a state dict: their
    # pickle names the module's classes, which weights_only=True refuses, so the upload is
    # refused at submission, with the way to send it that the server allows.
    body = assert_problem(
        submit(enabled, auth, pickled_module, {**AS_STATE_DICT, "model_format": model_format}), 422, "unsafe_model"
    )
    assert "torch.nn.modules.container.Sequential" in body["detail"]
    assert "must be sent with model_format 'pickled_module'" in body["detail"]
    assert enabled.get("/v1/jobs", headers=auth).json()["items"] == []


def test_disabled_switch_says_the_operator_must_enable_pickled_modules(
    client: TestClient, auth: dict[str, str], pickled_module: bytes
) -> None:
    body = assert_problem(submit(client, auth, pickled_module, AS_STATE_DICT), 422, "unsafe_model")
    assert "torch.nn.modules.container.Sequential" in body["detail"]
    assert "the operator must enable on this server (MODELPORT_ENABLE_PICKLED_MODULE)" in body["detail"]


def test_pickled_module_must_be_a_torch_save_file(enabled: TestClient, auth: dict[str, str]) -> None:
    onnx_bytes = b"\x08\x08\x12\x07pytorch"  # what the sniffer takes for ONNX
    body = assert_problem(submit(enabled, auth, onnx_bytes, PICKLED), 422, "format_mismatch")
    assert "'onnx'" in body["detail"]
