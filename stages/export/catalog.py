"""The architecture catalog: every constructor name the pinned torchvision and transformers offer.

``python -m stages.export.catalog`` (torch env) prints it as JSON, ``{module: [names]}``: for
every public module under ``torchvision.models`` its public callables, and for ``transformers``
its public top-level names. The control environment has neither package, so the API checks a
submitted ``architecture.name`` against this list, committed as ``domain/architectures.json``
(``make catalog`` writes it; ``tests/stages/test_architecture_catalog.py`` fails when the torch
lock changes and the file was not regenerated). The list is a superset of what builds: the
stage still resolves the name and checks where it is defined (``stages.export.model``).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from typing import Any


def catalog() -> dict[str, list[str]]:
    """``{module name: sorted public names}`` of the torch environment's model packages."""
    import torchvision.models

    found: dict[str, Any] = {"torchvision.models": torchvision.models}
    for info in pkgutil.walk_packages(torchvision.models.__path__, "torchvision.models."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found[info.name] = importlib.import_module(info.name)
    names = {
        module_name: sorted(a for a in dir(module) if not a.startswith("_") and callable(getattr(module, a, None)))
        for module_name, module in found.items()
    }
    import transformers

    # transformers is a lazy module: dir() lists every public name without importing each model.
    names["transformers"] = sorted(a for a in dir(transformers) if not a.startswith("_"))
    return dict(sorted(names.items()))


def dumps(names: dict[str, list[str]]) -> str:
    """One module per line, so a torchvision or transformers upgrade is a readable diff."""
    lines = [f"  {json.dumps(module)}: {json.dumps(members)}" for module, members in names.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(catalog()))
