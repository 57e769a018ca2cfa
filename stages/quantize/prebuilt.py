"""int8 files another stage made from the same model, as attempts of ``quantize.litert``.

litert-torch's PT2E file (variant ``pt2e``) is quantized from the PyTorch module by
``convert.litert_torch`` (``stages.convert.litert_torch_pt2e``); here it is only copied and
read, then checked and judged like ai-edge-quantizer's files (``stages.quantize.attempts``).
When that stage could not make it, the worker passes the reason in the source's
``pt2e_error`` and the attempt is listed as failed.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from stages.convert.litert_torch_pt2e import RECIPE, TARGET

PT2E = "pt2e"  # the variant of litert-torch's PT2E int8 file
PT2E_FILE = TARGET  # its name, as convert.litert_torch writes it
# The quantizer an attempt's variant belongs to, as the report names it, -> its package.
LIBRARIES = {"ai-edge-quantizer": "ai-edge-quantizer", "litert-torch-pt2e": "litert-torch"}


def quantizer_of(variant: str) -> str:
    """``litert-torch-pt2e`` for the PT2E file, ``ai-edge-quantizer`` for the recipes."""
    return "litert-torch-pt2e" if variant == PT2E else "ai-edge-quantizer"


def copy_file(source: Path, target: Path) -> dict[str, Any]:
    """The file copied to ``target``: ``{"recipe", "float_ops", "restored_outputs", "wall_seconds"}`` as the
    quantizer child reports them, or ``{"error": reason}``. Its boundary already follows
    ``int8_io`` (its convert stage read the same spec)."""
    from stages.quantize.child import float_ops

    started = time.monotonic()
    shutil.copyfile(source, target)
    try:
        ops = float_ops(target.read_bytes())
    except Exception as exc:  # noqa: BLE001 - not a flatbuffer the quantizer's reader takes
        return {"error": f"litert-torch's PT2E file cannot be read: {exc}"}
    return {
        "recipe": dict(RECIPE),
        "float_ops": ops,
        "restored_outputs": [],
        "wall_seconds": round(time.monotonic() - started, 3),
    }
