"""Pickles that would run code when loaded, built with the control environment's ``pickle``.

Building one only records a reference to the callable (``pickle.dumps`` never calls it);
each payload, if it ever ran, would create ``marker``, which the tests check stays absent.
Nothing here loads a pickle.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path
from typing import Any

# The global each call is pickled as, -> the callable: os.system pickles as posix.system
# on Linux (its __module__); "os.system" is written by hand, as an attacker would.
CALLS: dict[str, Any] = {
    "posix.system": os.system,
    "builtins.eval": builtins.eval,
    "subprocess.Popen": subprocess.Popen,
}
# A state dict's whole pickle, with only what torch.load(weights_only=True) allows:
# collections.OrderedDict() (protocol 2, GLOBAL, EMPTY_TUPLE, REDUCE, STOP).
ALLOWED_PICKLE = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01."


class Payload:
    """Pickles as ``call(*args)``."""

    def __init__(self, call: Any, args: tuple[Any, ...]) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.call, self.args


def _arguments(name: str, marker: Path) -> tuple[Any, ...]:
    if name == "builtins.eval":
        return (f"open({str(marker)!r}, 'w').write('pwned')",)
    if name == "subprocess.Popen":
        return (["touch", str(marker)],)
    return (f"touch {marker}",)


def payload(name: str, marker: Path) -> object:
    """An object that pickles as a call of ``name`` (a key of ``CALLS``) that would create ``marker``."""
    return Payload(CALLS[name], _arguments(name, marker))


def hostile_pickle(name: str, protocol: int, marker: Path) -> bytes:
    """A pickle of ``{"weight": <call name(...)>}`` at ``protocol``; loading it would create ``marker``.

    ``name`` is a key of ``CALLS`` or ``"os.system"`` (written by hand at protocol 0).
    """
    if name == "os.system":
        assert protocol == 0, "os.system is written by hand at protocol 0"
        return b"(dp0\nVweight\np1\ncos\nsystem\np2\n(V" + f"touch {marker}".encode() + b"\ntp3\nRp4\ns."
    return pickle.dumps({"weight": payload(name, marker)}, protocol=protocol)


def zip_archive(members: dict[str, bytes]) -> bytes:
    """A zip laid out like torch.save's (name -> content, stored uncompressed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def replace_member(source: Path, target: Path, suffix: str, content: bytes) -> Path:
    """A copy of a real torch archive whose member ending in ``suffix`` holds ``content``."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as forged:
        for member in original.infolist():
            forged.writestr(member, content if member.filename.endswith(suffix) else original.read(member))
    return target
