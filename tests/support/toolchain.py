"""The one toolchain helper of the tests: an environment's interpreter (``testkit.toolchains``,
shared with bench/) and helper scripts run in it (the control env has no framework)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from testkit.toolchains import ENV_OVERRIDES, toolchain_python

__all__ = ["ENV_OVERRIDES", "run_code", "run_script", "tf_script", "toolchain_python", "torch_script"]

HERE = Path(__file__).resolve().parent


def run_script(toolchain: str, script: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run tests/support/<script> in a toolchain environment; returns its JSON answer (last line)."""
    return _answer(toolchain, [str(HERE / script), *args], f"{script} {' '.join(args)}", timeout)


def run_code(toolchain: str, code: str, *args: str, timeout: float = 600) -> Any:
    """Run ``python -c code *args`` in a toolchain environment; returns its JSON answer (last line)."""
    return _answer(toolchain, ["-c", code, *args], f"python -c <{code.strip().splitlines()[0]}...>", timeout)


def _answer(toolchain: str, argv: list[str], label: str, timeout: float) -> Any:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [str(toolchain_python(toolchain)), *argv], capture_output=True, text=True, timeout=timeout, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def torch_script(*args: str, timeout: float = 600) -> dict[str, Any]:
    """Run tests/support/torch_models.py in the torch environment; returns its JSON answer."""
    return run_script("torch", "torch_models.py", *args, timeout=timeout)


def tf_script(*args: str, timeout: float = 600) -> dict[str, Any]:
    """Run tests/support/tf_models.py in the onnx-tf environment (TensorFlow); returns its JSON answer."""
    return run_script("onnx-tf", "tf_models.py", *args, timeout=timeout)
