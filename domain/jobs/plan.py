"""Which stages a job runs, in which environment, fed by which earlier outputs.

A stage's inputs are ``(source, name)`` pairs: ``source`` is ``"upload"`` for the
user's files, the name of an earlier stage whose output ``name`` it consumes, or
``"chosen"`` for the float32 .tflite of the candidate that won the selection.

TFLite candidates (one per converter toolchain) each get a ``convert_<c>`` and a
``validate_<c>`` stage, and a ``validate_flex_<c>`` stage that runs only when the file
needs Select-TF ("flex") ops: stock LiteRT cannot load those, so TensorFlow's
interpreter (the onnx-tf environment has TensorFlow) validates them instead.
Under ``toolchain: auto`` the candidates run in priority order and the rest are
skipped once one passes with builtin ops only; under ``best`` all run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages import registry

CONTROL = "control"  # runs in the worker process itself: no framework
FLEX_ENV = "onnx-tf"  # the environment with TensorFlow, whose interpreter runs flex ops


@dataclass(frozen=True)
class Converter:
    name: str  # as in the spec's `toolchain`
    env: str  # the toolchain environment (and queue) its stage runs in
    entry: str  # the ``python -m stages`` name
    source: str  # "onnx": converts the exported ONNX file; "model": converts the PyTorch model
    saved_model: bool = False  # also writes the SavedModel


CONVERTERS: dict[str, Converter] = {
    "onnx-tf": Converter("onnx-tf", "onnx-tf", registry.entry("convert", "onnx-tf"), "onnx", saved_model=True),
    "onnx2tf": Converter("onnx2tf", "onnx2tf", registry.entry("convert", "onnx2tf"), "onnx"),
    "litert-torch": Converter("litert-torch", "torch", registry.entry("convert", "litert-torch"), "model"),
}

# Priority per input format under `auto` (see docs/benchmarks.md for the measurements):
# onnx2tf keeps PyTorch's layout with one boundary transpose where onnx-tf wraps every
# convolution in transposes, and turns exact GELU into the builtin op where onnx-tf needs
# flex; onnx-tf stays as the fallback (and the SavedModel's source).
PRIORITY: dict[str, list[str]] = {
    "state_dict": ["onnx2tf", "litert-torch", "onnx-tf"],
    "exported_program": ["onnx2tf", "litert-torch", "onnx-tf"],
    "pickled_module": ["onnx2tf", "litert-torch", "onnx-tf"],
    # litert-torch converts a PyTorch module: TorchScript and ONNX uploads have none.
    "torchscript": ["onnx2tf", "onnx-tf"],
    "onnx": ["onnx2tf", "onnx-tf"],
}


@dataclass(frozen=True)
class StageDef:
    name: str
    toolchain: str
    entry: str | None  # the ``python -m stages`` name; None for control stages
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    candidate: str | None = None  # the converter this stage belongs to
    role: str = "other"  # "export", "convert", "validate", "quantize", "report"


def slug(converter: str) -> str:
    return converter.replace("-", "_")


EXPORT = StageDef(
    "export_onnx",
    "torch",
    registry.entry("export"),
    {"model": ("upload", "model"), "samples": ("upload", "inputs")},
    role="export",
)
REPORT = StageDef("report", CONTROL, None, role="report")
COMMON = {"samples": ("export_onnx", "samples"), "reference": ("export_onnx", "reference")}


def convert_stage(converter: Converter) -> StageDef:
    source = {"onnx": ("export_onnx", "onnx")} if converter.source == "onnx" else {"model": ("upload", "model")}
    return StageDef(
        f"convert_{slug(converter.name)}",
        converter.env,
        converter.entry,
        {**source, **COMMON},
        candidate=converter.name,
        role="convert",
    )


def validate_stage(converter: Converter) -> StageDef:
    return StageDef(
        f"validate_{slug(converter.name)}",
        "torch",
        registry.entry("validate"),
        {"tflite": (f"convert_{slug(converter.name)}", "tflite_float32"), **COMMON},
        {"precision": "float32"},
        candidate=converter.name,
        role="validate",
    )


def validate_flex_stage(converter: Converter) -> StageDef:
    plain = validate_stage(converter)
    return StageDef(
        f"validate_flex_{slug(converter.name)}",
        FLEX_ENV,
        plain.entry,
        plain.inputs,
        {**plain.options, "runtime": "tensorflow"},
        candidate=converter.name,
        role="validate",
    )


def candidates(spec: dict[str, Any]) -> list[str]:
    """The TFLite converters this job tries, in order."""
    order = PRIORITY.get(spec.get("model_format", "state_dict"), PRIORITY["state_dict"])
    chosen = spec.get("toolchain", "auto")
    if chosen in CONVERTERS:
        return [chosen] if chosen in order else []
    available = spec.get("available_toolchains") or list(CONVERTERS)
    return [name for name in order if name in available]


def plan_stages(spec: dict[str, Any]) -> list[StageDef]:
    """The chain for a normalized spec: only what its targets need."""
    targets = set(spec.get("targets", []))
    stages = [EXPORT]
    tflite = "tflite" in targets
    converters = candidates(spec) if tflite else []
    if "saved_model" in targets and "onnx-tf" not in converters:
        stages.append(convert_stage(CONVERTERS["onnx-tf"]))
    flex = FLEX_ENV in (spec.get("available_toolchains") or list(CONVERTERS))
    for name in converters:
        stages += [convert_stage(CONVERTERS[name]), validate_stage(CONVERTERS[name])]
        if flex:
            stages.append(validate_flex_stage(CONVERTERS[name]))
    quantized = [p for p in spec.get("quantization", ["float32"]) if p != "float32"]
    if tflite and quantized:
        stages.append(
            StageDef(
                "quantize",
                "torch",
                registry.entry("quantize"),
                {"tflite": ("chosen", "tflite_float32"), "calibration": ("upload", "calibration"), **COMMON},
                {"precisions": quantized},
                role="quantize",
            )
        )
    stages.append(REPORT)
    return stages


def onnx_consumers(spec: dict[str, Any]) -> list[str]:
    """The converters of this plan that read the exported ONNX file."""
    names = {s.candidate for s in plan_stages(spec) if s.role == "convert" and s.candidate}
    return sorted(n for n in names if CONVERTERS[n].source == "onnx")


def stage_def(spec: dict[str, Any], name: str) -> StageDef:
    for definition in plan_stages(spec):
        if definition.name == name:
            return definition
    raise KeyError(f"stage {name!r} is not part of this job's plan")


def dependencies(spec: dict[str, Any], name: str) -> list[str]:
    """The stages that must be over (succeeded, failed or skipped) before ``name`` runs.

    Under ``best`` only what a stage consumes, so the candidates convert and validate at
    the same time on their own queues; otherwise every earlier stage, because ``auto``
    decides after each candidate whether the next one runs at all.
    """
    stages = plan_stages(spec)
    names = [s.name for s in stages]
    earlier = stages[: names.index(name)]
    definition = stages[names.index(name)]
    if spec.get("toolchain", "auto") != "best" or definition.role == "report":
        return [s.name for s in earlier]
    needed: set[str] = set()
    for source, _ in definition.inputs.values():
        if source == "chosen":  # the winner is known once every candidate is validated
            needed |= {s.name for s in earlier if s.role in ("convert", "validate")}
        elif source != "upload":
            needed.add(source)
    if definition.name.startswith("validate_flex_"):
        needed.add(f"validate_{slug(definition.candidate or '')}")
    return [s.name for s in earlier if s.name in needed]
