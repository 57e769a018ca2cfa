"""Every stage, one row each: its name, where its function lives, its environment, its role.

``python -m stages <name>`` imports a row's module only when asked for it: a stage module
imports its framework inside its function, but importing the module lazily as well keeps
the entry point from touching modules (and their helper imports, such as numpy) that
belong to another toolchain's environment. The planner (``domain.jobs.plan``) reads the
same rows through ``entry(role, converter)``, so a stage's name is written once, here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult

Stage = Callable[[StageRequest], StageResult]

OTHER_TOOLCHAIN = "Try another toolchain (spec.toolchain)"


class Unforeseen(NamedTuple):
    """What an exception the stage did not foresee is reported as: the arguments of
    ``stages.kit.failures.unexpected`` (the code of the stage's role, who failed, and what
    the user can try)."""

    code: StageCode
    actor: str
    advice: str


UNFORESEEN = Unforeseen(StageCode.STAGE_FAILED, "The stage", "Report it with the stage log")


@dataclass(frozen=True)
class StageEntry:
    """One stage: ``name`` (``<role>.<module>``, the ``python -m stages`` name), its
    ``module`` and ``function``, the ``toolchain`` environment whose interpreter runs it
    (``any`` for the framework-free self-tests), its ``role`` and, for a converter, the
    ``converter`` name the spec's ``toolchain`` uses."""

    name: str
    module: str
    function: str
    toolchain: str
    role: str
    unforeseen: Unforeseen = UNFORESEEN
    converter: str | None = None


ROWS: tuple[StageEntry, ...] = (
    StageEntry(
        "export.prepare",
        "stages.export.prepare",
        "run",
        "torch",
        "export",
        Unforeseen(
            StageCode.EXPORT_FAILED, "export.prepare (loading, ONNX export)", "Check the model runs on spec.inputs"
        ),
    ),
    StageEntry(
        "convert.onnx_tf",
        "stages.convert.onnx_tf",
        "run",
        "onnx-tf",
        "convert",
        Unforeseen(StageCode.CONVERSION_FAILED, "The onnx-tf converter", OTHER_TOOLCHAIN),
        converter="onnx-tf",
    ),
    StageEntry(
        "convert.onnx2tf",
        "stages.convert.onnx2tf",
        "run",
        "onnx2tf",
        "convert",
        Unforeseen(StageCode.CONVERSION_FAILED, "The onnx2tf converter", OTHER_TOOLCHAIN),
        converter="onnx2tf",
    ),
    StageEntry(
        "validate.tflite",
        "stages.validate.tflite",
        "run",
        "torch",
        "validate",
        Unforeseen(StageCode.VALIDATION_FAILED, "Validating the .tflite", OTHER_TOOLCHAIN),
    ),
    StageEntry(
        "convert.litert_torch",
        "stages.convert.litert_torch",
        "run",
        "torch",
        "convert",
        Unforeseen(StageCode.CONVERSION_FAILED, "The litert-torch converter", OTHER_TOOLCHAIN),
        converter="litert-torch",
    ),
    StageEntry(
        "quantize.litert",
        "stages.quantize.litert",
        "run",
        "torch",
        "quantize",
        Unforeseen(StageCode.QUANTIZATION_FAILED, "The quantizer", "Drop spec.quantization or try another toolchain"),
    ),
    # Runner self-tests: real processes that sleep, crash or allocate (no framework).
    *(
        StageEntry(f"selftest.{function}", "stages.kit.selftest", function, "any", "selftest")
        for function in (
            "echo",
            "sleep",
            "abort",
            "allocate",
            "imports",
            "network",
            "leak",
            "spawn",
            "fork_sleep",
        )
    ),
)
STAGES: dict[str, StageEntry] = {row.name: row for row in ROWS}


def get_stage(name: str) -> Stage:
    row = lookup(name)
    stage: Stage = getattr(importlib.import_module(row.module), row.function)
    return stage


def lookup(name: str) -> StageEntry:
    """The row of stage ``name``; ``unknown_stage`` for a name no row has."""
    try:
        return STAGES[name]
    except KeyError:
        raise StageError(StageCode.UNKNOWN_STAGE, f"unknown stage {name!r}; known: {sorted(STAGES)}") from None


def entry(role: str, converter: str | None = None) -> str:
    """The name of the stage that plays ``role`` (for ``convert``, that of ``converter``).

    Raises ``KeyError`` when no row does: a planner asking for it is a bug.
    """
    for row in ROWS:
        if row.role == role and (role != "convert" or row.converter == converter):
            return row.name
    raise KeyError(f"no stage plays {role!r}" + (f" for {converter!r}" if converter else ""))


def unforeseen(name: str) -> Unforeseen:
    """How an exception stage ``name`` did not foresee is reported."""
    row = STAGES.get(name)
    return row.unforeseen if row is not None else UNFORESEEN
