"""Whether a submitted ``architecture.name`` exists in the pinned torchvision / transformers.

The names come from ``architectures.json`` (written by ``make catalog``, which runs
``stages.export.catalog`` in the torch environment). Only names the catalog covers are
judged: a constructor of ``torchvision.models`` or one of its modules, or a top-level
``transformers`` name. Deeper paths (``transformers.models.bert.modeling_bert.BertModel``)
and packages an operator allowed beyond these are left to the stage, which imports them.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from pathlib import Path

CATALOG = Path(__file__).with_name("architectures.json")
TORCHVISION = "torchvision.models"


@cache
def catalog() -> dict[str, frozenset[str]]:
    """``{module: names}`` from ``architectures.json``."""
    names: dict[str, list[str]] = json.loads(CATALOG.read_text())
    return {module: frozenset(members) for module, members in names.items()}


def unknown(name: str) -> str | None:
    """Why ``name`` (a dotted path) names nothing in the catalog, with the closest names; ``None``
    when it does, or when the catalog does not cover its module."""
    module, _, attr = name.rpartition(".")
    known = catalog()
    if module in known:
        if attr in known[module]:
            return None
        close = difflib.get_close_matches(attr, known[module], n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(f'{module}.{c}' for c in close)}?" if close else ""
        return f"{module!r} has no constructor {attr!r}{hint}"
    if module.startswith(TORCHVISION + "."):
        close = difflib.get_close_matches(module, [m for m in known if m.startswith(TORCHVISION)], n=3, cutoff=0.8)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"torchvision has no module {module!r}{hint}"
    return None
