"""Recognise a model file's format from its bytes (never its name), without a framework."""

from __future__ import annotations

import json
import struct
import zipfile
from typing import BinaryIO

PICKLE_PROTOCOL_2_PLUS = b"\x80"


def sniff_format(stream: BinaryIO) -> str | None:
    """One of the spec's formats, ``state_dict_or_module`` for a torch.save archive, or None."""
    head = stream.read(64)
    stream.seek(0)
    if not head:
        return None
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(stream)
    if _looks_like_safetensors(head, stream):
        return "safetensors"
    if head.startswith(PICKLE_PROTOCOL_2_PLUS) and len(head) > 1 and 2 <= head[1] <= 5:
        # torch.save's legacy (non-zip) format starts with a pickled magic number.
        return "state_dict_or_module"
    if _looks_like_onnx(head):
        return "onnx"
    return None


def _sniff_zip(stream: BinaryIO) -> str | None:
    try:
        with zipfile.ZipFile(stream) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    finally:
        stream.seek(0)
    leaves = {name.split("/", 1)[1] if "/" in name else name for name in names}
    # torch.export.save writes a PT2 archive (archive_format, models/*.json) or, in older
    # releases, serialized_exported_program.*; TorchScript has code/ and constants.pkl.
    if any(leaf == "archive_format" or leaf.startswith(("serialized_exported_program", "models/")) for leaf in leaves):
        return "exported_program"
    if "constants.pkl" in leaves or any(leaf.startswith("code/") for leaf in leaves):
        return "torchscript"
    if "data.pkl" in leaves:
        return "state_dict_or_module"
    return None


def _looks_like_safetensors(head: bytes, stream: BinaryIO) -> bool:
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    if not 2 <= header_len <= 100 * 1024 * 1024 or head[8:9] != b"{":
        return False
    try:
        header = json.loads(stream.read(8 + header_len)[8:])
    except (ValueError, UnicodeDecodeError):
        return False
    finally:
        stream.seek(0)
    return isinstance(header, dict)


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto starts with ir_version (field 1, varint, tag 0x08) in every exporter we know of.
    return head[:1] == b"\x08" and 3 <= head[1] <= 20
