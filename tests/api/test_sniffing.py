"""Format sniffing (app/services/sniff.py) and the declared format against the bytes (resolve_format)."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest

from app.core.errors import InvalidRequest
from app.services.jobs import resolve_format
from app.services.sniff import sniff_format


def _zip(names: list[str]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")
    buffer.seek(0)
    return buffer


def test_sniffing_reads_bytes_not_names() -> None:
    assert sniff_format(_zip(["archive/data.pkl", "archive/data/0", "archive/version"])) == "state_dict_or_module"
    assert sniff_format(_zip(["m/code/__torch__.py", "m/constants.pkl", "m/data.pkl"])) == "torchscript"
    assert sniff_format(_zip(["m/archive_format", "m/models/model.json"])) == "exported_program"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    assert sniff_format(io.BytesIO(struct.pack("<Q", len(header)) + header + b"\0" * 4)) == "safetensors"
    assert sniff_format(io.BytesIO(b"\x08\x08\x12\x07pytorch")) == "onnx"
    assert sniff_format(io.BytesIO(b"\x80\x02\x8a\x0alegacy")) == "state_dict_or_module"
    assert sniff_format(io.BytesIO(b"")) is None
    assert sniff_format(io.BytesIO(b"PK\x03\x04 truncated zip")) is None
    assert sniff_format(io.BytesIO(b"hello world")) is None


def test_declared_format_must_match_the_bytes() -> None:
    assert resolve_format("auto", "safetensors") == "state_dict"
    assert resolve_format("state_dict", "state_dict_or_module") == "state_dict"
    with pytest.raises(InvalidRequest) as error:
        resolve_format("torchscript", "onnx")
    assert error.value.instance_code == "format_mismatch"
    assert "'onnx'" in error.value.detail
    with pytest.raises(InvalidRequest) as error:
        resolve_format("pickled_module", "state_dict_or_module")
    assert error.value.instance_code == "format_disabled"
