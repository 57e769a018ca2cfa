"""The interpreter of a toolchain environment, for tests and benchmarks (the control env has no framework)."""

from __future__ import annotations

import os
from pathlib import Path

from domain.toolchains import TOOLCHAINS

# An interpreter given by hand wins over the built environment (e.g. a CI image's own).
ENV_OVERRIDES = {
    "torch": "MODELPORT_TORCH_PYTHON",
    "onnx-tf": "MODELPORT_ONNX_TF_PYTHON",
    "onnx2tf": "MODELPORT_ONNX2TF_PYTHON",
}


def toolchain_python(name: str) -> Path:
    """``<env>/bin/python`` of toolchain ``name``, or its ``ENV_OVERRIDES`` variable when set.

    Raises RuntimeError when the environment is not built (``make envs`` builds it).
    """
    override = os.environ.get(ENV_OVERRIDES.get(name, "-"))
    if override:
        return Path(override)
    toolchain = TOOLCHAINS[name]
    try:
        ready = toolchain.is_ready()
    except OSError:  # no lock file yet, so no environment either
        ready = False
    if not ready:
        raise RuntimeError(f"toolchain {name!r} is not built: run 'make envs' ({toolchain.env_dir})")
    return toolchain.interpreter
