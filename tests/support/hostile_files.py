"""Hostile and broken uploads, built from tiny real files: cut in half, bytes flipped inside
a member, a member that inflates far beyond the file or declares many GB, pickles that
would run code, a PNG or noise in their place, nothing at all (tests/stages/test_hostile.py
runs them through export.prepare, tests/api/test_hostile_api.py through the API)."""

from __future__ import annotations

import pickle
import random
import struct
import zipfile
import zlib
from pathlib import Path

from tests.support.hostile_pickles import hostile_pickle, replace_member

MiB = 1024 * 1024
HUGE_SHAPE = [100000, 100000, 3]
# The member holding the weight in each torch archive: flipping bytes there changes the
# model, and torch's reader would not notice.
WEIGHT_MEMBER = {"torchscript": "/data/0", "program": "/data/weights/weight_0", "state_dict": "/data/0"}
# Pickles that would run code (the API refuses them at submission; the stage must too):
# case -> (the global they call, pickle protocol). "archive" replaces a real state dict's data.pkl.
UNSAFE = {
    "pickle_p0_os_system": ("os.system", 0),
    "pickle_p2_posix_system": ("posix.system", 2),
    "pickle_p4_posix_system": ("posix.system", 4),  # torch stops at FRAME: "Unsupported operand 149"
    "pickle_p4_eval": ("builtins.eval", 4),
    "pickle_p5_popen": ("subprocess.Popen", 5),
    "archive_posix_system": ("posix.system", 2),
}

MAKE_MODELS = r"""
import json, sys
from pathlib import Path

import onnx
import torch
from onnx import TensorProto, helper

out = Path(sys.argv[1])
(out / "ext").mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
linear = torch.nn.Linear(64, 64).eval()
example = (torch.randn(2, 64),)
files = {"torchscript": out / "linear.pt", "program": out / "linear.pt2", "state_dict": out / "linear.pth"}
torch.jit.save(torch.jit.trace(linear, example), str(files["torchscript"]))
torch.export.save(torch.export.export(linear, example), str(files["program"]))
torch.save(linear.state_dict(), str(files["state_dict"]))


def write(name, path, shape, nodes, initializers=()):
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "y"))
    graph = helper.make_graph(nodes, "hostile", [x], [y], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # The bytes only: onnx.save would look at (or write) the external data itself.
    path.write_bytes(model.SerializeToString())
    files[name] = path


add = helper.make_node("Add", ["x", "w"], ["y"])
weights = helper.make_tensor("w", TensorProto.FLOAT, [4096], torch.randn(4096).tolist())
write("onnx_weights", out / "weights.onnx", [1, 4096], [add], [weights])
identity = helper.make_node("Identity", ["x"], ["y"])
write("onnx_huge_input", out / "huge_input.onnx", [100000, 100000, 3], [identity])
locations = {
    "absolute": str(out / "secret" / "absolute.bin"),
    "dotdot": "../secret/dotdot.bin",
    "symlink": "weights.link",
}
for case, location in locations.items():
    external = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    external.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = external.external_data.add()
        entry.key, entry.value = key, value
    write(f"onnx_external_{case}", out / "ext" / f"{case}.onnx", [1, 4], [add], [external])
print(json.dumps({name: str(path) for name, path in files.items()}))
"""


def truncated(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def flipped(source: Path, target: Path, member_suffix: str) -> Path:
    """A copy with four bytes inverted in the middle of one member's data."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        member = next(m for m in archive.infolist() if m.filename.endswith(member_suffix))
    # The local header's extra field (torch pads it for alignment) is not the central one.
    name_length, extra_length = struct.unpack_from("<HH", data, member.header_offset + 26)
    middle = member.header_offset + 30 + name_length + extra_length + member.compress_size // 2
    data[middle : middle + 4] = bytes(byte ^ 0xFF for byte in data[middle : middle + 4])
    target.write_bytes(bytes(data))
    return target


def inflating(source: Path, target: Path, member_suffix: str, size: int) -> Path:
    """A copy of a torch archive whose member is ``size`` zero bytes, deflated: a real zip bomb."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as bomb:
        for member in original.infolist():
            if not member.filename.endswith(member_suffix):
                bomb.writestr(member, original.read(member))
                continue
            info = zipfile.ZipInfo(member.filename)
            info.compress_type = zipfile.ZIP_DEFLATED
            with bomb.open(info, "w", force_zip64=True) as data:
                for _ in range(size // MiB):
                    data.write(bytes(MiB))
    return target


def declaring(source: Path, target: Path, member_suffix: str, size: int) -> Path:
    """A copy of a torch archive whose central directory says a member unpacks to ``size`` bytes."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as forged:
        for member in original.infolist():
            forged.writestr(member, original.read(member))
        entry = next(m for m in forged.infolist() if m.filename.endswith(member_suffix))
        entry.file_size = size  # the central directory, written on close, declares it
    return target


def png() -> bytes:
    """A real 1x1 PNG image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def noise(size: int = 4096) -> bytes:
    return random.Random(5).randbytes(size)


def hostile_files(real: dict[str, Path], out: Path) -> dict[str, Path]:
    """name -> a damaged, forged or foreign file built from the real ones."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for kind in ("torchscript", "program", "state_dict"):
        files[f"{kind}_truncated"] = truncated(real[kind], out / f"{kind}.truncated")
        files[f"{kind}_flipped"] = flipped(real[kind], out / f"{kind}.flipped", WEIGHT_MEMBER[kind])
    files["state_dict_bomb"] = inflating(real["state_dict"], out / "bomb.pth", "/data/0", 128 * MiB)
    files["torchscript_64gib"] = declaring(real["torchscript"], out / "64gib.pt", "/data/0", 64 * 1024 * MiB)
    files["onnx_truncated"] = truncated(real["onnx_weights"], out / "weights.truncated.onnx")
    for case, (call, protocol) in UNSAFE.items():
        content = hostile_pickle(call, protocol, out / f"pwned-{case}")
        if case.startswith("archive"):
            files[case] = replace_member(real["state_dict"], out / f"{case}.pth", "/data.pkl", content)
        else:
            files[case] = out / f"{case}.pkl"
            files[case].write_bytes(content)
    files["pickle_p4_harmless"] = out / "harmless.pkl"
    files["pickle_p4_harmless"].write_bytes(pickle.dumps({"weight": [1.0, 2.0]}, protocol=4))
    for name, content in (("png", png()), ("noise", noise()), ("empty", b"")):
        files[name] = out / name
        files[name].write_bytes(content)
    return files
