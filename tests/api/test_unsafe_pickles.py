"""Pickles that would run code are refused at submission: 422 ``unsafe_model`` naming the global.

The scan (stages/export/pickle_scan.py) reads opcodes with ``pickletools``; nothing is loaded. Each
hostile file, if anything unpickled it, would create a marker file; each refusal must leave
no job row and nothing in the object store. Real torch.save files of every kind a state
dict comes in must still be accepted (no false alarm).
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import random
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from domain.config import Settings
from stages.export.pickle_scan import MAX_OPCODES, TORCH_LEGACY_MAGIC, describe, scan_file
from tests.support.api import SPEC, submit
from tests.support.hostile_pickles import ALLOWED_PICKLE, CALLS, Payload, hostile_pickle, payload, zip_archive
from tests.support.toolchain import toolchain_python

SAVE_STATE_DICTS = """
import sys
from pathlib import Path

import torch

out = Path(sys.argv[1])
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
state = model.state_dict()
checkpoint = {
    "state_dict": state, "epoch": 3, "lr": 0.1, "name": "run-1", "device": torch.device("cpu"),
    "dtype": torch.float16, "size": torch.Size([2, 3]), "bf16": torch.zeros(2, dtype=torch.bfloat16),
    "parameter": torch.nn.Parameter(torch.ones(2)), "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
}
torch.save(state, out / "zip.pth")
torch.save(state, out / "legacy.pth", _use_new_zipfile_serialization=False)
torch.save(checkpoint, out / "checkpoint.pth")
torch.save(checkpoint, out / "checkpoint_legacy.pth", _use_new_zipfile_serialization=False)
torch.save(model, out / "module.pth")
"""
REAL_STATE_DICTS = ("zip.pth", "legacy.pth", "checkpoint.pth", "checkpoint_legacy.pth")
RAW_CASES = [
    ("os.system", 0),
    *((name, protocol) for name in CALLS for protocol in (0, 2, 4, 5)),
]


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real torch.save files (zip and legacy, a state dict and a checkpoint, a whole module)."""
    out = tmp_path_factory.mktemp("torch-saved")
    subprocess.run([str(toolchain_python("torch")), "-c", SAVE_STATE_DICTS, str(out)], check=True, timeout=600)
    return out


def job_rows(settings: Settings) -> int:
    engine = create_engine(settings.database.database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM jobs")).scalar_one())
    finally:
        engine.dispose()


def stored_files(settings: Settings) -> list[Path]:
    return [path for path in settings.storage_root.rglob("*") if path.is_file()]


def assert_unsafe(client: TestClient, auth: dict[str, str], settings: Settings, model: bytes, *names: str) -> str:
    """Both ways a state dict is sent are refused with ``unsafe_model``; nothing is kept."""
    details = []
    for model_format in ("auto", "state_dict"):
        response = submit(client, auth, model, {**SPEC, "model_format": model_format})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["code"] == "unsafe_model", body
        for name in names:
            assert name in body["detail"], body["detail"]
        assert "torch.save(model.state_dict())" in body["detail"]
        assert "MODELPORT_ENABLE_PICKLED_MODULE" in body["detail"]
        details.append(body["detail"])
    assert job_rows(settings) == 0
    assert stored_files(settings) == []
    return details[0]


@pytest.mark.parametrize(("name", "protocol"), RAW_CASES)
def test_a_raw_pickle_calling_code_is_unsafe(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path, name: str, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    assert_unsafe(client, auth, settings, hostile_pickle(name, protocol, marker), name)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("members", "named"),
    [
        pytest.param({"archive/data.pkl": "posix.system"}, ["posix.system", "'archive/data.pkl'"], id="data_pkl"),
        pytest.param(
            {"archive/data.pkl": None, "archive/nested/dir/extra.pkl": "builtins.eval"},
            ["builtins.eval", "'archive/nested/dir/extra.pkl'"],
            id="second_pkl",
        ),
    ],
)
def test_a_torch_archive_whose_pickle_calls_code_is_unsafe(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    tmp_path: Path,
    members: dict[str, str | None],
    named: list[str],
) -> None:
    marker = tmp_path / "pwned"
    contents = {
        name: ALLOWED_PICKLE if call is None else hostile_pickle(call, 2, marker) for name, call in members.items()
    }
    archive = zip_archive({**contents, "archive/version": b"3\n", "archive/data/0": bytes(16)})
    assert_unsafe(client, auth, settings, archive, *named)
    assert not marker.exists()


def test_a_pickled_module_sent_as_a_state_dict_is_unsafe(
    client: TestClient, auth: dict[str, str], settings: Settings, torch_files: Path
) -> None:
    # torch.save(model) names the module's classes; a state dict loader refuses them.
    detail = assert_unsafe(client, auth, settings, (torch_files / "module.pth").read_bytes(), "torch.nn.modules")
    assert "torch.nn.modules.container.Sequential" in detail


@pytest.mark.parametrize("file", REAL_STATE_DICTS)
def test_real_state_dicts_are_accepted(
    client: TestClient, auth: dict[str, str], settings: Settings, torch_files: Path, file: str
) -> None:
    for model_format in ("auto", "state_dict"):
        response = submit(client, auth, (torch_files / file).read_bytes(), {**SPEC, "model_format": model_format})
        assert response.status_code == 202, response.text
        assert response.json()["spec"]["model_format"] == "state_dict"
    assert job_rows(settings) == 2


def test_an_archive_with_only_allowed_globals_is_accepted(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    archive = zip_archive({"archive/data.pkl": ALLOWED_PICKLE, "archive/nested/other.pkl": ALLOWED_PICKLE})
    assert submit(client, auth, archive).status_code == 202


def test_a_pickle_too_long_to_scan_is_refused_quickly(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    endless = b"\x80\x02" + b"N" * (MAX_OPCODES + 10) + b"."  # a pickle of many Nones
    started = time.monotonic()
    response = submit(client, auth, endless)
    assert time.monotonic() - started < 60
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "pickle_too_large"
    assert str(MAX_OPCODES) in response.json()["detail"]
    assert job_rows(settings) == 0
    assert stored_files(settings) == []


# The scanner itself, on pickles the API tests do not build.


def test_stack_global_names_come_from_memoized_strings() -> None:
    # pickle memoizes "posix": the second STACK_GLOBAL takes it from the memo (BINGET 1).
    data = pickle.dumps([payload("posix.system", Path("/nonexistent/pwned")), Payload(os.getcwd, ())], protocol=4)
    assert b"h\x01\x8c\x06getcwd\x94\x93" in data
    assert scan_file(io.BytesIO(data)).names == ["posix.system", "posix.getcwd"]


def test_a_stack_global_with_computed_operands_is_refused() -> None:
    # STACK_GLOBAL over a module name built by a call is not readable without running it.
    data = b"\x80\x04\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01x\x93."
    assert scan_file(io.BytesIO(data)).names == ["<a STACK_GLOBAL whose name is computed>"]


def test_python2_names_are_read_as_python3_ones() -> None:
    data = b"c__builtin__\neval\n(S'1'\ntR."
    assert scan_file(io.BytesIO(data)).names == ["builtins.eval"]
    assert scan_file(io.BytesIO(b"c__builtin__\nset\n(]tR.")).names == []


def test_extension_codes_are_refused() -> None:
    assert scan_file(io.BytesIO(b"\x80\x02\x82\x01)R.")).names == ["<copyreg extension code 1>"]


def test_legacy_format_pickles_are_scanned_up_to_the_storage_bytes() -> None:
    magic = pickle.dumps(TORCH_LEGACY_MAGIC, protocol=2)
    hostile = hostile_pickle("posix.system", 2, Path("/nonexistent/pwned"))
    head = magic + pickle.dumps(1001, protocol=2) + pickle.dumps({"little_endian": True}, protocol=2)
    # The data pickle is the fourth: scanned; after the fifth come raw storage bytes.
    assert scan_file(io.BytesIO(head + hostile + pickle.dumps([], protocol=2))).names == ["posix.system"]
    assert scan_file(io.BytesIO(head + ALLOWED_PICKLE + pickle.dumps([], protocol=2) + hostile)).names == []
    # Without the magic number torch.load stops after the first pickle.
    assert scan_file(io.BytesIO(ALLOWED_PICKLE + hostile)).names == []


def test_a_truncated_pickle_reports_what_came_before_the_cut() -> None:
    hostile = hostile_pickle("builtins.eval", 2, Path("/nonexistent/pwned"))
    assert scan_file(io.BytesIO(hostile[: hostile.index(b"eval") + 6])).names == ["builtins.eval"]
    # A string declaring 2 GiB in a tiny file is a short read, not a 2 GiB allocation.
    assert scan_file(io.BytesIO(b"\x80\x02X\x00\x00\x00\x80abc")).names == []


def test_describe_names_each_global_once_with_its_place() -> None:
    data = pickle.dumps([payload(name, Path("/x")) for name in (*CALLS, "posix.system")], protocol=2)
    offsets = [offset for opcode, _, offset in pickletools.genops(data) if opcode.name == "GLOBAL"]
    assert len(offsets) == 3  # pickle memoizes the repeated global
    assert describe(scan_file(io.BytesIO(data)).findings, limit=2) == (
        f"posix.system (in the file, byte {offsets[0]}), builtins.eval (in the file, byte {offsets[1]}) and 1 more"
    )


@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")  # pickletools on noise
def test_random_bytes_are_not_called_unsafe() -> None:
    # Random bytes parse as a few opcodes before failing, sometimes a GLOBAL or STACK_GLOBAL
    # among them; an upload of garbage is invalid_model in the stage, never unsafe_model.
    for seed in range(3000):
        noise = random.Random(seed).randbytes(4096)
        for data in (noise, b"\x80\x02" + noise):
            assert scan_file(io.BytesIO(data)).findings == [], seed
    # Cut short after a real module path: that global would be imported before the damage.
    damaged = b"\x80\x02cposix\nsystem\nq\x00\xff"
    assert scan_file(io.BytesIO(damaged)).names == ["posix.system"]


def test_what_was_found_before_a_bound_is_kept() -> None:
    hostile = b"\x80\x02cposix\nsystem\n"
    result = scan_file(io.BytesIO(hostile + b"N" * (MAX_OPCODES + 10) + b"."))
    assert result.names == ["posix.system"]  # so the API answers unsafe_model, not pickle_too_large
    assert result.too_large is not None
    assert f"more than {MAX_OPCODES} opcodes" in result.too_large.reason
