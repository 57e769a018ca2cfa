"""Which stages a job runs, in which environment, fed by which earlier outputs.

A stage's inputs are ``(source, name)`` pairs: ``source`` is ``"upload"`` for the
user's files or the name of an earlier stage whose output ``name`` it consumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONTROL = "control"  # runs in the worker process itself: no framework


@dataclass(frozen=True)
class StageDef:
    name: str
    toolchain: str
    entry: str | None  # the ``python -m stages`` name; None for control stages
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


EXPORT = StageDef(
    "export_onnx",
    "torch",
    "torch.prepare",
    {"model": ("upload", "model"), "samples": ("upload", "inputs")},
)
CONVERT = StageDef(
    "convert_tf",
    "onnx-tf",
    "onnx_tf.convert",
    {
        "onnx": ("export_onnx", "onnx"),
        "samples": ("export_onnx", "samples"),
        "reference": ("export_onnx", "reference"),
    },
)
VALIDATE_TFLITE = StageDef(
    "validate_tflite",
    "torch",
    "litert.validate",
    {
        "tflite": ("convert_tf", "tflite_float32"),
        "samples": ("export_onnx", "samples"),
        "reference": ("export_onnx", "reference"),
    },
    {"precision": "float32"},
)
REPORT = StageDef("report", CONTROL, None)


def plan_stages(spec: dict[str, Any]) -> list[StageDef]:
    """The chain for a normalized spec: only what its targets need."""
    targets = set(spec.get("targets", []))
    stages = [EXPORT]
    if targets & {"saved_model", "tflite"}:
        stages.append(CONVERT)
    if "tflite" in targets:
        stages.append(VALIDATE_TFLITE)
    stages.append(REPORT)
    return stages


def stage_def(spec: dict[str, Any], name: str) -> StageDef:
    for definition in plan_stages(spec):
        if definition.name == name:
            return definition
    raise KeyError(f"stage {name!r} is not part of this job's plan")


def next_stage(spec: dict[str, Any], name: str) -> StageDef | None:
    stages = plan_stages(spec)
    names = [s.name for s in stages]
    index = names.index(name)
    return stages[index + 1] if index + 1 < len(stages) else None
