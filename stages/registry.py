"""Stage names -> stage functions, imported only when asked for.

A stage module imports its framework inside its function, but importing the module
lazily as well keeps ``python -m stages`` from touching modules (and their helper
imports, such as numpy) that belong to another toolchain's environment.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult

Stage = Callable[[StageRequest], StageResult]

# name -> (module, function, toolchain whose interpreter runs it)
STAGES: dict[str, tuple[str, str, str]] = {
    "export.prepare": ("stages.export.prepare", "run", "torch"),
    "convert.onnx_tf": ("stages.convert.onnx_tf", "run", "onnx-tf"),
    "convert.onnx2tf": ("stages.convert.onnx2tf", "run", "onnx2tf"),
    "validate.tflite": ("stages.validate.tflite", "run", "torch"),
    "convert.litert_torch": ("stages.convert.litert_torch", "run", "torch"),
    "quantize.litert": ("stages.quantize.litert", "run", "torch"),
    # Runner self-tests: real processes that sleep, crash or allocate (no framework).
    "selftest.echo": ("stages.kit.selftest", "echo", "any"),
    "selftest.sleep": ("stages.kit.selftest", "sleep", "any"),
    "selftest.abort": ("stages.kit.selftest", "abort", "any"),
    "selftest.allocate": ("stages.kit.selftest", "allocate", "any"),
    "selftest.network": ("stages.kit.selftest", "network", "any"),
    "selftest.leak": ("stages.kit.selftest", "leak", "any"),
    "selftest.spawn": ("stages.kit.selftest", "spawn", "any"),
}

# An exception a stage did not foresee, by stage: (the code of the stage's role, who
# failed, what the user can try). See stages.kit.failures; other stages say "stage_failed".
OTHER_TOOLCHAIN = "Try another toolchain (spec.toolchain)"
UNEXPECTED: dict[str, tuple[StageCode, str, str]] = {
    "export.prepare": (
        StageCode.EXPORT_FAILED,
        "export.prepare (loading, ONNX export)",
        "Check the model runs on spec.inputs",
    ),
    "convert.onnx_tf": (StageCode.CONVERSION_FAILED, "The onnx-tf converter", OTHER_TOOLCHAIN),
    "convert.onnx2tf": (StageCode.CONVERSION_FAILED, "The onnx2tf converter", OTHER_TOOLCHAIN),
    "convert.litert_torch": (StageCode.CONVERSION_FAILED, "The litert-torch converter", OTHER_TOOLCHAIN),
    "validate.tflite": (StageCode.VALIDATION_FAILED, "Validating the .tflite", OTHER_TOOLCHAIN),
    "quantize.litert": (
        StageCode.QUANTIZATION_FAILED,
        "The quantizer",
        "Drop spec.quantization or try another toolchain",
    ),
}
UNFORESEEN = (StageCode.STAGE_FAILED, "The stage", "Report it with the stage log")


def get_stage(name: str) -> Stage:
    try:
        module_name, function, _toolchain = STAGES[name]
    except KeyError:
        raise StageError(StageCode.UNKNOWN_STAGE, f"unknown stage {name!r}; known: {sorted(STAGES)}") from None
    stage: Stage = getattr(importlib.import_module(module_name), function)
    return stage


def unforeseen(name: str) -> tuple[StageCode, str, str]:
    """(code, who failed, what to try) for an exception stage ``name`` did not foresee."""
    return UNEXPECTED.get(name, UNFORESEEN)


def toolchain_of(name: str) -> str:
    """The toolchain environment a stage must run in (for the worker's routing)."""
    try:
        return STAGES[name][2]
    except KeyError:
        raise StageError(StageCode.UNKNOWN_STAGE, f"unknown stage {name!r}; known: {sorted(STAGES)}") from None
