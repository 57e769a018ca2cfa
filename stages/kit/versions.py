"""The installed versions of the packages a stage used, for ``info.versions``.

One helper for every stage: each names its packages (in the order the report lists
them) and gets ``{package: version or None}`` from the environment's metadata, without
importing the package.
"""

from __future__ import annotations

import platform
from importlib import metadata


def versions(*packages: str | tuple[str, str], python: bool = False) -> dict[str, str | None]:
    """``{key: version}`` for ``packages``, None for one not installed.

    A package is its distribution name, or ``(key, distribution)`` when the report names
    it otherwise (``("onnx_tf", "onnx-tf")``). ``python`` puts the interpreter's version first.
    """
    found: dict[str, str | None] = {"python": platform.python_version()} if python else {}
    for package in packages:
        key, distribution = package if isinstance(package, tuple) else (package, package)
        found[key] = version(distribution)
    return found


def version(distribution: str) -> str | None:
    """One distribution's installed version, None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
