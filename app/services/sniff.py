"""Recognise a model file's format from its bytes (never its name), without a framework."""

from __future__ import annotations

import json
import struct
import zipfile
from typing import BinaryIO

from app.core.codes import ErrorCode
from app.core.errors import InvalidRequest
from stages.export.pickle_scan import looks_like_pickle

PICKLE_PROTOCOL_2_PLUS = b"\x80"
# torch.save, torch.jit.save and torch.export.save store tensors uncompressed, so what a
# zip's members declare unpacked is about the file's own size; far more is a zip bomb.
# The stage refuses one too, with the same numbers (stages/export/model.py).
MAX_UNPACK_RATIO = 10
UNPACK_FLOOR_BYTES = 64 * 1024**2
MAX_UNPACKED_BYTES = 32 * 1024**3


def sniff_format(stream: BinaryIO) -> str | None:
    """One of the spec's formats, ``state_dict_or_module`` for a torch.save archive, or None.

    Raises ``archive_too_large`` (422) for a zip whose central directory declares far more
    unpacked bytes than torch would have written into a file this size; no member is read.
    """
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
    if looks_like_pickle(stream):
        # A protocol 0/1 pickle has no header; torch.load reads it the legacy way.
        return "state_dict_or_module"
    return None


def _sniff_zip(stream: BinaryIO) -> str | None:
    try:
        with zipfile.ZipFile(stream) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):  # an unknown zip version
        return None
    finally:
        stream.seek(0)
    _refuse_zip_bomb(members, stream.seek(0, 2))
    stream.seek(0)
    leaves = {m.filename.split("/", 1)[1] if "/" in m.filename else m.filename for m in members}
    # torch.export.save writes a PT2 archive (archive_format, models/*.json) or, in older
    # releases, serialized_exported_program.*; TorchScript has code/ and constants.pkl.
    if any(leaf == "archive_format" or leaf.startswith(("serialized_exported_program", "models/")) for leaf in leaves):
        return "exported_program"
    if "constants.pkl" in leaves or any(leaf.startswith("code/") for leaf in leaves):
        return "torchscript"
    if "data.pkl" in leaves:
        return "state_dict_or_module"
    return None


def _refuse_zip_bomb(members: list[zipfile.ZipInfo], size: int) -> None:
    unpacked = sum(member.file_size for member in members)
    limit = min(MAX_UNPACKED_BYTES, max(UNPACK_FLOOR_BYTES, MAX_UNPACK_RATIO * size))
    if unpacked > limit:
        raise InvalidRequest(
            f"the archive's {len(members)} members declare {unpacked} bytes unpacked from a {size}-byte file; "
            f"the limit for this file is {limit} bytes ({MAX_UNPACK_RATIO}x its size, at least "
            f"{UNPACK_FLOOR_BYTES}, at most {MAX_UNPACKED_BYTES}). torch stores archive members uncompressed: "
            "upload the file it wrote, not a re-compressed one",
            code=ErrorCode.ARCHIVE_TOO_LARGE,
        )


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
