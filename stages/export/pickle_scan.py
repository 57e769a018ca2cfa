"""Find the globals a pickle would import, without running it (stdlib ``pickletools`` only).

A pickle runs code through the globals it names: ``GLOBAL``/``INST`` (``module\\nname``),
``STACK_GLOBAL`` (the two strings on top of the stack) and the copyreg extension codes
(``EXT1/2/4``). ``REDUCE``, ``NEWOBJ``, ``OBJ`` and ``BUILD`` only call what such a global
put on the stack, so a pickle whose every global is one ``torch.load(weights_only=True)``
allows cannot call anything else. The scan walks the opcodes with
``pickletools.genops`` (nothing is imported or executed) and reports every other global,
named as the pickle names it (``posix.system``, ``builtins.eval``); the approach of
picklescan and modelscan, with torch's own allow-list instead of a deny-list.

``ALLOWED_GLOBALS`` is torch 2.14's ``torch._weights_only_unpickler._get_allowed_globals()``
(tests/stages/test_pickle_scan.py compares the two in the torch environment). Python 2
names are mapped to Python 3 ones first (``__builtin__.set`` is ``builtins.set``), as both
``pickle`` and torch's unpickler do.

What is scanned (:func:`scan_file`): a zip (torch.save's archive) by every member whose
name ends in ``.pkl``, at any depth, duplicates included; any other file as torch's
legacy format reads it: one pickle, and when that one is torch's magic number, the four
that follow it (protocol, system info, the data, the storage keys; raw storage bytes come
after and are not pickles). Bounded: a zip member or a file's pickles over
``MAX_PICKLE_BYTES``, or over ``MAX_OPCODES`` opcodes, end the scan (``ScanResult.too_large``);
nothing is read into memory beyond one opcode's argument, which the byte bound caps.

A pickle that stops parsing (truncated, an unknown opcode) is reported up to that point
(an unpickler stops at the same place, so the rest never runs), and only by globals that
are dotted Python paths: random bytes can parse as a few opcodes, a GLOBAL among them.
"""

from __future__ import annotations

import pickletools
import re
import struct
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field
from typing import BinaryIO

MAX_PICKLE_BYTES = 128 * 1024**2
MAX_OPCODES = 2_000_000  # a state dict takes about 30 per tensor
SNIFF_OPCODES = 100_000  # parsed this far without an error, a headerless file is a pickle
MAX_LINE_BYTES = 64 * 1024  # protocol 0 reads names and numbers up to a newline
# A dotted Python path ("posix.system"); what a damaged pickle names must look like one to count.
_IMPORTABLE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", re.ASCII)
MAX_TRACKED_STRING = 1024  # longer strings cannot be module or attribute names we allow
# torch.save's legacy (non-zip) format starts with this number, pickled on its own.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PICKLES = 5  # magic number, protocol, sys info, data, storage keys

_SCALARS = ("BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short")
_COMPLEX = ("ComplexDouble", "ComplexFloat")
_QUANTIZED = ("QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8")
_SPARSE = tuple(kind for kind in _SCALARS if kind != "Bool")
_DTYPES = (
    "bcomplex32 bfloat16 bits16 bits1x8 bits2x4 bits4x2 bits8 bool complex128 complex32 complex64 "
    "float16 float32 float4_e2m1fn_x2 float64 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz "
    "float8_e8m0fnu qint32 qint8 quint2x4 quint4x2 quint8 "
    "int1 int2 int3 int4 int5 int6 int7 int8 int16 int32 int64 "
    "uint1 uint2 uint3 uint4 uint5 uint6 uint7 uint8 uint16 uint32 uint64"
).split()
_REBUILD = (
    "_rebuild_device_tensor_from_cpu_tensor _rebuild_device_tensor_from_numpy _rebuild_meta_tensor_no_storage "
    "_rebuild_nested_tensor _rebuild_parameter _rebuild_parameter_with_state _rebuild_qtensor "
    "_rebuild_sparse_tensor _rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_wrapper_subclass"
).split()
_QSCHEMES = (
    "per_channel_affine per_channel_affine_float_qparams per_channel_symmetric per_tensor_affine per_tensor_symmetric"
).split()

ALLOWED_GLOBALS: frozenset[str] = frozenset(
    {
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.set",
        "collections.Counter",
        "collections.OrderedDict",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch._tensor._rebuild_from_type_v2",
        *(f"torch._utils.{name}" for name in _REBUILD),
        *(f"torch.{name}" for name in (*_DTYPES, *_QSCHEMES)),
        *(f"torch.{kind}Storage" for kind in (*_SCALARS, *_COMPLEX, *_QUANTIZED)),
        *(f"torch.cuda.{kind}Storage" for kind in (*_SCALARS, *_COMPLEX)),
        *(f"{module}.{kind}Tensor" for module in ("torch", "torch.cuda") for kind in _SCALARS),
        *(f"{module}.{kind}Tensor" for module in ("torch.sparse", "torch.cuda.sparse") for kind in _SPARSE),
    }
)

# What each opcode means to the scan; every other opcode changes the stack in a way it does not follow.
_NEUTRAL, _STRING, _MEMO_GET, _MEMO_PUT, _MEMOIZE, _GLOBAL, _STACK_GLOBAL, _EXTENSION, _OTHER = range(9)
_KINDS: dict[str, int] = {
    "PROTO": _NEUTRAL,  # PROTO and FRAME change nothing on the stack
    "FRAME": _NEUTRAL,
    **dict.fromkeys(
        ("UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"),
        _STRING,
    ),
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), _MEMO_GET),
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), _MEMO_PUT),
    "MEMOIZE": _MEMOIZE,
    "GLOBAL": _GLOBAL,
    "INST": _GLOBAL,
    "STACK_GLOBAL": _STACK_GLOBAL,
    **dict.fromkeys(("EXT1", "EXT2", "EXT4"), _EXTENSION),
}


class PickleTooLarge(Exception):
    """A pickle over the scan's bounds (``MAX_PICKLE_BYTES``, ``MAX_OPCODES``); ``where`` names it."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass
class Finding:
    """A global the pickle in ``where`` names (``module.name``) at byte ``offset``, not allowed."""

    name: str
    where: str
    offset: int


@dataclass
class ScanResult:
    """Every refused global found, in file order; ``pickles`` is how many pickles were read."""

    findings: list[Finding] = field(default_factory=list)
    pickles: int = 0
    too_large: PickleTooLarge | None = None  # the scan stopped at a bound, after ``findings``

    @property
    def names(self) -> list[str]:
        """The refused globals' names, each once, in the order first seen."""
        return list(dict.fromkeys(finding.name for finding in self.findings))


class _BoundedReader:
    """``read``/``readline`` over ``stream`` that never go past ``size`` bytes or the byte bound."""

    def __init__(self, stream: BinaryIO, size: int, where: str) -> None:
        self._stream = stream
        self._left = size
        self._read = 0
        self._where = where

    def tell(self) -> int:
        """Bytes read so far: genops reports each opcode's offset with it."""
        return self._read

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        if self._read + n > MAX_PICKLE_BYTES:
            raise PickleTooLarge(self._where, f"its pickles go on past {MAX_PICKLE_BYTES} bytes")
        data = self._stream.read(n)
        self._read += len(data)
        self._left -= len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        n = min(MAX_LINE_BYTES if limit < 0 else limit, MAX_LINE_BYTES, self._left)
        if self._read + n > MAX_PICKLE_BYTES:
            raise PickleTooLarge(self._where, f"its pickles go on past {MAX_PICKLE_BYTES} bytes")
        data = self._stream.readline(n)
        self._read += len(data)
        self._left -= len(data)
        return data


def _global_name(module: str, name: str) -> str:
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


class _PickleWalker:
    """Walks one pickle's opcodes, tracking only what ``STACK_GLOBAL`` needs: recent strings."""

    def __init__(
        self, reader: _BoundedReader, where: str, result: ScanResult, opcodes: list[int], limit: int = MAX_OPCODES
    ) -> None:
        self.reader = reader
        self.limit = limit
        self.where = where
        self.result = result
        self.opcodes = opcodes  # shared count over the whole file: [n]
        self.memo: dict[int, str | None] = {}
        self.pushed: list[str | None] = []  # the top of the stack, as far as only strings were pushed
        self.values: list[object] = []  # the first constants this pickle pushed (for the magic number)
        self.findings: list[Finding] = []
        self.first_opcode = opcodes[0]

    def walk(self) -> bool:
        """True when the pickle parsed to its STOP; False when it stopped parsing before."""
        kinds, pushed, memo, values = _KINDS, self.pushed, self.memo, self.values
        try:
            for opcode, arg, offset in pickletools.genops(self.reader):  # type: ignore[arg-type]  # read, readline, tell
                self.opcodes[0] += 1
                if self.opcodes[0] > self.limit:
                    raise PickleTooLarge(self.where, f"its pickles hold more than {self.limit} opcodes")
                kind = kinds.get(opcode.name, _OTHER)
                if kind == _OTHER:
                    pushed.clear()
                    if arg is not None and len(values) < 2:  # enough to tell the magic number's pickle
                        values.append(arg)
                elif kind == _STRING:
                    pushed.append(arg if isinstance(arg, str) and len(arg) <= MAX_TRACKED_STRING else None)
                    del pushed[:-2]  # STACK_GLOBAL takes two
                    if len(values) < 2:
                        values.append(arg)
                elif kind == _MEMO_GET:
                    pushed.append(memo.get(arg))  # type: ignore[arg-type]
                    del pushed[:-2]
                elif kind in (_MEMO_PUT, _MEMOIZE):
                    memo[len(memo) if kind == _MEMOIZE else arg] = pushed[-1] if pushed else None  # type: ignore[index]
                elif kind != _NEUTRAL:
                    self._global(kind, arg, offset or 0)
                    pushed.clear()
        except (ValueError, EOFError, struct.error, OverflowError):
            # Cut short: an unpickler would import what came before the damage, but only a
            # real module path; random bytes that happen to parse as a GLOBAL are no threat.
            self.findings = [found for found in self.findings if _IMPORTABLE.fullmatch(found.name)]
            return False
        finally:
            self.result.findings.extend(self.findings)
        return True

    def _global(self, kind: int, arg: object, offset: int) -> None:
        if kind == _GLOBAL:
            module, _, attribute = str(arg).partition(" ")
            name = _global_name(module, attribute)
        elif kind == _STACK_GLOBAL:
            module_or_none, attribute_or_none = self.pushed[-2:] if len(self.pushed) >= 2 else (None, None)
            if module_or_none is None or attribute_or_none is None:
                if self.opcodes[0] - self.first_opcode < 4:
                    return  # no room for a call that made a str: the unpickler fails here
                name = "<a STACK_GLOBAL whose name is computed>"
            else:
                name = _global_name(module_or_none, attribute_or_none)
        else:
            name = f"<copyreg extension code {arg}>"
        if name not in ALLOWED_GLOBALS:
            self.findings.append(Finding(name, self.where, offset))


def scan_pickles(stream: BinaryIO, size: int, where: str, result: ScanResult, *, legacy: bool = False) -> None:
    """Scan the pickle at ``stream``'s position (``size`` bytes available) into ``result``.

    With ``legacy``, a first pickle holding torch's magic number is followed by the rest
    of torch.save's legacy format. Raises :class:`PickleTooLarge` past the bounds.
    """
    reader = _BoundedReader(stream, size, where)
    opcodes = [0]
    for index in range(LEGACY_PICKLES if legacy else 1):
        walker = _PickleWalker(reader, where, result, opcodes)
        complete = walker.walk()
        result.pickles += 1
        if not complete or (index == 0 and walker.values != [TORCH_LEGACY_MAGIC]):
            return


def scan_file(stream: BinaryIO) -> ScanResult:
    """Scan a torch.save file, zip or legacy (see the module's docstring); ``stream`` is seekable.

    A ``.pkl`` member or pickles over the bounds end the scan: ``too_large`` says where,
    ``findings`` holds what was found before.
    """
    result = ScanResult()
    size = stream.seek(0, 2)
    stream.seek(0)
    try:
        if stream.read(4) == b"PK\x03\x04":
            stream.seek(0)
            _scan_zip(stream, result)
        else:
            stream.seek(0)
            scan_pickles(stream, size, "the file", result, legacy=True)
    except PickleTooLarge as exc:
        result.too_large = exc
    stream.seek(0)
    return result


def _scan_zip(stream: BinaryIO, result: ScanResult) -> None:
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError):
        return  # not readable as a zip: nor by torch, and the stage refuses it as damaged
    with archive:
        for member in archive.infolist():
            if not member.filename.lower().endswith(".pkl"):
                continue
            where = repr(member.filename)
            if member.file_size > MAX_PICKLE_BYTES:
                raise PickleTooLarge(where, f"{member.file_size} bytes, over the {MAX_PICKLE_BYTES} scanned")
            try:
                with archive.open(member) as data:
                    scan_pickles(data, member.file_size, where, result)  # type: ignore[arg-type]
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError):
                continue  # a member zipfile cannot read: export.prepare refuses the archive as damaged


def looks_like_pickle(stream: BinaryIO) -> bool:
    """True when seekable ``stream`` starts with a complete pickle of protocol 0 or 1 (no PROTO).

    Protocol 2+ pickles start with ``\\x80``; older ones have no header, so only parsing to
    a STOP tells, or parsing ``SNIFF_OPCODES`` of them (no other file goes that far); damage is False.
    """
    size = stream.seek(0, 2)
    stream.seek(0)
    head = stream.read(1)
    stream.seek(0)
    if head not in _PROTOCOL_0_STARTS:
        return False
    reader = _BoundedReader(stream, size, "the file")
    try:
        complete = _PickleWalker(reader, "the file", ScanResult(), [0], limit=SNIFF_OPCODES).walk()
    except PickleTooLarge:
        complete = True
    stream.seek(0)
    return complete


# The first opcode of a protocol 0/1 pickle of a dict, list, tuple or object (a state dict's);
# torch.save's legacy format at protocol 0/1 starts with the magic number, a LONG.
_PROTOCOL_0_STARTS = frozenset({b"(", b"}", b"]", b")", b"c", b"i", b"L"})


def describe(findings: list[Finding], limit: int = 5) -> str:
    """``posix.system (in 'archive/data.pkl', byte 2)``, the first ``limit`` distinct names."""
    first: dict[str, Finding] = {}
    for finding in findings:
        first.setdefault(finding.name, finding)
    parts = [f"{name} (in {found.where}, byte {found.offset})" for name, found in list(first.items())[:limit]]
    more = len(first) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")
