"""Build a PyTorch model from an uploaded state dict and an allow-listed architecture.

Imported only by torch-env stages; torch is imported inside the functions so the
module itself stays cheap to import (and testable without torch).

Safety: a state dict is loaded with ``torch.load(weights_only=True)`` (or as
safetensors) and there is no fallback to full unpickling. An architecture is an
importable constructor whose *defining* module lies under an allow-listed prefix,
so a dotted path cannot walk out of the package through a re-exported module
(``torchvision.models.resnet.torch.hub.load``). Pretrained-weight arguments are
forced off: a stage never downloads.
"""

from __future__ import annotations

import importlib
import inspect
import re
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.failures import first_line
from stages.kit.spec import ArchitectureSpec

DEFAULT_ALLOWED = ("torchvision.models.", "transformers.")
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
WEIGHT_ARGS = ("weights", "weights_backbone")
LEGACY_PRETRAINED_ARGS = ("pretrained", "pretrained_backbone")
LIST_LIMIT = 8
ZIP_MAGIC = b"PK\x03\x04"
# torch.save, torch.jit.save and torch.export.save store tensors uncompressed, so what an
# archive's members declare unpacked is about the file's own size; far more is a zip bomb.
# The control plane refuses one at submission with the same numbers (app/services/sniff.py).
MAX_UNPACK_RATIO = 10
UNPACK_FLOOR_BYTES = 64 * 1024**2
MAX_UNPACKED_BYTES = 32 * 1024**3
READ_CHUNK = 1024 * 1024


def check_upload(path: Path) -> None:
    """Refuse an empty, damaged or bomb-like upload before a framework opens it.

    A zip archive (every torch format but the legacy pickle) declares its members' sizes
    in its central directory, checked before any member is read, and a CRC-32 per member,
    checked by reading each in chunks: torch's reader skips it, so a flipped byte in a
    tensor would load silently.
    """
    size = path.stat().st_size
    if size == 0:
        raise StageError(StageCode.EMPTY_MODEL, "the model file is empty (0 bytes): upload the whole file")
    with path.open("rb") as handle:
        if handle.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            _refuse_zip_bomb(members, size)
            for member in members:
                with archive.open(member) as data:
                    while data.read(READ_CHUNK):
                        pass
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError) as exc:  # ValueError: bad names, offsets
        raise StageError(
            StageCode.CORRUPT_ARCHIVE,
            f"the model archive is damaged ({first_line(exc, 200)}): it was truncated or altered in transit "
            "or on disk. Upload the file torch saved again",
        ) from None
    except (NotImplementedError, RuntimeError) as exc:  # encrypted, or an exotic compression method
        raise StageError(
            StageCode.INVALID_MODEL,
            f"the zip archive cannot be read as a torch archive ({first_line(exc, 200)}); upload the file "
            "torch.save, torch.jit.save or torch.export.save wrote, as it is",
        ) from None


def _refuse_zip_bomb(members: list[zipfile.ZipInfo], size: int) -> None:
    unpacked = sum(member.file_size for member in members)
    limit = min(MAX_UNPACKED_BYTES, max(UNPACK_FLOOR_BYTES, MAX_UNPACK_RATIO * size))
    if unpacked <= limit:
        return
    largest = max(members, key=lambda member: member.file_size)
    raise StageError(
        StageCode.ARCHIVE_TOO_LARGE,
        f"the archive's {len(members)} members declare {unpacked} bytes unpacked from a {size}-byte file "
        f"(the largest, {largest.filename!r}, {largest.file_size}); the limit for this file is {limit} bytes "
        f"({MAX_UNPACK_RATIO}x its size, at least {UNPACK_FLOOR_BYTES}, at most {MAX_UNPACKED_BYTES}). "
        "torch stores archive members uncompressed: upload the file it wrote, not a re-compressed one",
    )


def load_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of an uploaded state dict, checkpoint wrappers and prefixes removed.

    The result keeps what ``torch.save(model.state_dict())`` wrote besides the tensors:
    ``_metadata``, the per-module versions keyed by module path, which modules that
    migrate old checkpoints read in ``_load_from_state_dict`` (torchvision's MNASNet
    refuses to load without one). Its keys are re-prefixed like the tensors' keys when
    ``module.`` is stripped. A safetensors file has none; ``apply_state_dict`` then
    takes the model's own.
    """
    import torch

    with path.open("rb") as handle:
        head = handle.read(16)
    if _looks_like_safetensors(head, path.stat().st_size):
        raw: Any = _load_safetensors(path)
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unpickling failure is the user's file
            raise _not_loadable(path, exc) from None
    state = _unwrap_checkpoint(raw)
    return _strip_prefix(state, "module.")


def resolve_architecture(name: str, allowed: list[str] | tuple[str, ...]) -> Callable[..., Any]:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", name):
        raise StageError(
            StageCode.ARCHITECTURE_NOT_FOUND,
            f"architecture.name must be a dotted path such as 'torchvision.models.resnet18', got {name!r}",
        )
    if not _under(name, allowed):
        raise StageError(
            StageCode.ARCHITECTURE_NOT_ALLOWED,
            f"{name!r} is outside the allowed packages {list(allowed)}; ask the operator to allow it",
        )
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StageError(
            StageCode.ARCHITECTURE_NOT_FOUND, f"cannot import {module_name!r} for {name!r}: {exc}"
        ) from None
    target = getattr(module, attr, None)
    if target is None or not callable(target):
        raise StageError(
            StageCode.ARCHITECTURE_NOT_FOUND,
            f"{module_name!r} has no constructor {attr!r}; check the spelling (e.g. 'torchvision.models.resnet18')",
        )
    defined_in = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', attr)}"
    if not _under(defined_in, allowed):
        raise StageError(
            StageCode.ARCHITECTURE_NOT_ALLOWED,
            f"{name!r} resolves to {defined_in!r}, which is outside the allowed packages {list(allowed)}",
        )
    return target  # type: ignore[no-any-return]


def build_model(architecture: ArchitectureSpec | None, allowed: list[str] | tuple[str, ...]) -> Any:
    import torch

    chosen = architecture or ArchitectureSpec("")
    constructor = resolve_architecture(chosen.name, allowed)
    kwargs = dict(chosen.kwargs)
    try:
        if chosen.config is not None:
            model = _build_from_config(constructor, dict(chosen.config), kwargs)
        else:
            model = constructor(**_without_downloads(constructor, kwargs))
    except StageError:
        raise
    except Exception as exc:  # the constructor is user-chosen code
        raise StageError(
            StageCode.ARCHITECTURE_FAILED,
            f"{chosen.name}(**{kwargs}) failed: {first_line(exc)}; check architecture.kwargs",
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise StageError(
            StageCode.ARCHITECTURE_FAILED,
            f"{chosen.name} returned {type(model).__name__}, not a torch.nn.Module",
        )
    return model


def apply_state_dict(model: Any, state: dict[str, Any]) -> None:
    """Load strictly, but first collect every mismatch so one message lists them all.

    Without per-module versions (``_metadata``: a safetensors file, or a dict rebuilt
    by hand), the file is taken as saved by the installed model code: its own versions.
    """
    expected = model.state_dict()
    if getattr(state, "_metadata", None) is None:
        state = _with_metadata(state, getattr(expected, "_metadata", None))
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key}: file {list(state[key].shape)} vs model {list(expected[key].shape)}"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
    ):
        if items:
            shown = ", ".join(items[:LIST_LIMIT])
            more = f" (+{len(items) - LIST_LIMIT} more)" if len(items) > LIST_LIMIT else ""
            problems.append(f"{len(items)} {label}: {shown}{more}")
    if problems:
        raise StageError(
            StageCode.STATE_DICT_MISMATCH,
            "the state dict does not fit the architecture: "
            + "; ".join(problems)
            + ". Check architecture.name and kwargs "
            "(e.g. num_classes) against the model that was saved",
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise StageError(StageCode.STATE_DICT_MISMATCH, first_line(exc)) from None


def _under(dotted: str, allowed: list[str] | tuple[str, ...]) -> bool:
    for prefix in allowed:
        root = prefix.rstrip(".")
        if root and (dotted == root or dotted.startswith(root + ".")):
            return True
    return False


def _without_downloads(constructor: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        params = inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    for key in LEGACY_PRETRAINED_ARGS:
        kwargs.pop(key, None)
    for key in WEIGHT_ARGS:
        if key in params:
            kwargs[key] = None
        else:
            kwargs.pop(key, None)
    return kwargs


def _build_from_config(constructor: Any, config: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    config_class = getattr(constructor, "config_class", None)
    if config_class is None:
        raise StageError(
            StageCode.ARCHITECTURE_FAILED,
            "architecture.config is only for transformers model classes (which have a config_class)",
        )
    # Causal language models export without a KV cache; weights come from the upload.
    config.setdefault("use_cache", False)
    return constructor(config_class(**config), **kwargs)


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # safetensors: little-endian u64 header length, then a JSON object.
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return 0 < header_len <= size - 8 and head[8:9] == b"{"


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise StageError(StageCode.INVALID_MODEL, f"not a readable safetensors file: {first_line(exc)}") from None


UNSAFE_PREFIX = "the file is a pickle that would run code when loaded"
# How torch's weights-only unpickler names a global it refuses ("posix.system", "builtins.exec").
REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.<>]+?)\.?(?: |$)")


def _not_loadable(path: Path, exc: BaseException) -> StageError:
    """``unsafe_model`` naming the global when the pickle imports one weights_only refuses, else
    ``invalid_model``. torch names a refused GLOBAL itself but stops at opcodes it cannot read
    (``Unsupported operand 149``: protocol 4's FRAME), so the file's pickles are also scanned
    (stages/export/pickle_scan.py, nothing run) for the globals behind that."""
    from stages.export import pickle_scan

    cause = _root_cause(exc)
    detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
    try:
        with path.open("rb") as handle:
            named = pickle_scan.describe(pickle_scan.scan_file(handle).findings)
    except OSError:
        named = ""
    if not named and (found := REFUSED_GLOBAL.search(detail)):
        named = found.group(1)
    if named:
        return StageError(
            StageCode.UNSAFE_MODEL,
            f"{UNSAFE_PREFIX}: it imports {named}, which is refused (state dicts load with weights_only=True, "
            "no fallback). Save the weights with torch.save(model.state_dict()) or as .safetensors; a whole "
            f"pickled model needs model_format 'pickled_module', if the operator enabled it ({detail})",
        )
    # torch's own wording suggests retrying with weights_only=False, which is exactly
    # what must not happen: report the underlying reason instead.
    return StageError(
        StageCode.INVALID_MODEL,
        "not a PyTorch state dict: torch.load (weights_only=True) could not read it as a "
        f"torch.save file, and it is not safetensors ({type(cause).__name__}: {detail.split('. ')[0]})",
    )


def _root_cause(exc: BaseException) -> BaseException:
    cause = exc
    while cause.__cause__ is not None or cause.__context__ is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    return cause


def _unwrap_checkpoint(raw: Any) -> dict[str, Any]:
    import torch

    if isinstance(raw, dict) and not _all_tensors(raw):
        for key in CHECKPOINT_KEYS:
            inner = raw.get(key)
            if isinstance(inner, dict) and inner and _all_tensors(inner):
                return _with_metadata(inner, getattr(inner, "_metadata", None))
    if isinstance(raw, dict) and raw and _all_tensors(raw):
        return _with_metadata(raw, getattr(raw, "_metadata", None))
    kind = type(raw).__name__
    if isinstance(raw, dict):
        odd = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)][:LIST_LIMIT]
        detail = f"a dict whose entries {odd} are not tensors" if raw else "an empty dict"
    else:
        detail = f"a {kind}"
    raise StageError(
        StageCode.INVALID_MODEL,
        f"expected a state dict (name -> tensor), or a checkpoint dict "
        f"holding one under {list(CHECKPOINT_KEYS)}; the file holds {detail}",
    )


def _all_tensors(mapping: dict[Any, Any]) -> bool:
    import torch

    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in mapping.items())


def _with_metadata(tensors: dict[str, Any], metadata: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of the tensors carrying ``metadata`` as ``_metadata``, as torch's own state dicts do."""
    copied: dict[str, Any] = OrderedDict(tensors)
    if metadata is not None:
        copied._metadata = OrderedDict(metadata)  # type: ignore[attr-defined]
    return copied


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    # DataParallel / DistributedDataParallel save every key under "module.", and their
    # per-module versions under "module" (the wrapped model) and "module.<path>"; the
    # root "" is the wrapper's own, not the model's.
    if not state or not all(key.startswith(prefix) for key in state):
        return state
    metadata: dict[str, Any] | None = getattr(state, "_metadata", None)
    if metadata is not None:
        root = prefix.rstrip(".")
        stripped = {
            ("" if path == root else path[len(prefix) :]): version
            for path, version in metadata.items()
            if path == root or path.startswith(prefix)
        }
        metadata = stripped or metadata  # versions saved without the prefix already fit
    return _with_metadata({key[len(prefix) :]: value for key, value in state.items()}, metadata)
