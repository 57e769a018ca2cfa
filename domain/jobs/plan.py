"""Which stages a job runs, in which environment, fed by which earlier outputs.

A stage's inputs are ``(source, name)`` pairs: ``source`` is ``"upload"`` for the
user's files, the name of an earlier stage whose output ``name`` it consumes, or
``"chosen"`` for the float32 .tflite of the candidate that won the selection. The
quantize stage also gets every candidate's float32 file (``tflite_<candidate>``): it
tries the passing ones in selection order; and, when the job asks for int8, the int8 file
each candidate's convert stage writes besides (``INT8_OUTPUTS``; that stage then also gets
the uploaded calibration): litert-torch's PT2E file from the PyTorch module
(``tflite_int8_pt2e_<candidate>``), TensorFlow's full-integer quantization of an ONNX
converter's SavedModel (``tflite_int8_tf_ptq_<candidate>``, stage option ``tf_ptq``).

SavedModel candidates are the converters that write one (``saved_model=True``),
in ``SAVED_MODEL_PRIORITY`` order; one that is not also a TFLite candidate gets a
``convert_<c>`` stage of its own, before the TFLite candidates.

TFLite candidates (one per converter toolchain) each get a ``convert_<c>`` and a
``validate_<c>`` stage, and a ``validate_flex_<c>`` stage that runs only when the file
needs Select-TF ("flex") ops: stock LiteRT cannot load those, so TensorFlow's
interpreter (the onnx-tf environment has TensorFlow) validates them instead.
Under ``toolchain: auto`` the candidates run in priority order and the rest are
skipped once one passes with builtin ops only; under ``best`` all run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from domain.jobs import names
from stages import registry
from stages.kit.results import PT2E, TF_PTQ, prebuilt_output
from stages.kit.spec import PlanSpec

CONTROL = "control"  # runs in the worker process itself: no framework
FLEX_ENV = "onnx-tf"  # the environment with TensorFlow, whose interpreter runs flex ops
PT2E_OUTPUT = prebuilt_output(PT2E)  # convert.litert_torch's int8 file (stages.convert.litert_torch_pt2e)
TF_PTQ_OUTPUT = prebuilt_output(TF_PTQ)  # convert.onnx_tf's / convert.onnx2tf's (stages.convert.tf_ptq)
# The int8 file a convert stage writes when the job asks for int8, by what it converts.
INT8_OUTPUTS = {"model": PT2E_OUTPUT, "onnx": TF_PTQ_OUTPUT}


@dataclass(frozen=True)
class Converter:
    name: str  # as in the spec's `toolchain`
    env: str  # the toolchain environment (and queue) its stage runs in
    entry: str  # the ``python -m stages`` name
    source: str  # "onnx": converts the exported ONNX file; "model": converts the PyTorch model
    saved_model: bool = False  # also writes the SavedModel


CONVERTERS: dict[str, Converter] = {
    "onnx-tf": Converter("onnx-tf", "onnx-tf", registry.entry("convert", "onnx-tf"), "onnx", saved_model=True),
    "onnx2tf": Converter("onnx2tf", "onnx2tf", registry.entry("convert", "onnx2tf"), "onnx", saved_model=True),
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

# The SavedModel candidates' order under `auto` (every converter with ``saved_model``).
# onnx2tf first: it reads every opset and LayerNormalization, and its SavedModel costs
# one extra export of the ModelIR it already built, where onnx-tf (opset <= 15) converts
# the graph again in TensorFlow 2.15 (see docs/benchmarks.md).
SAVED_MODEL_PRIORITY = ["onnx2tf", "onnx-tf"]


@dataclass(frozen=True)
class StageDef:
    name: str
    toolchain: str
    entry: str | None  # the ``python -m stages`` name; None for control stages
    inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    candidate: str | None = None  # the converter this stage belongs to
    role: str = "other"  # "export", "convert", "validate", "quantize", "report"


EXPORT = StageDef(
    names.EXPORT,
    "torch",
    registry.entry("export"),
    {"model": ("upload", "model"), "samples": ("upload", "inputs")},
    role="export",
)
REPORT = StageDef(names.REPORT, CONTROL, None, role="report")
COMMON = {"samples": (names.EXPORT, "samples"), "reference": (names.EXPORT, "reference")}


def convert_stage(converter: Converter, int8: bool = False) -> StageDef:
    """A converter's stage; with ``int8`` (the job asks for it and the converter is a TFLite
    candidate) it also gets the uploaded calibration and writes its ``INT8_OUTPUTS`` file:
    the PT2E file from the PyTorch module, or (option ``tf_ptq``) TensorFlow's from the
    SavedModel of an ONNX converter."""
    source = {"onnx": (names.EXPORT, "onnx")} if converter.source == "onnx" else {"model": ("upload", "model")}
    options: dict[str, Any] = {}
    if int8:
        source["calibration"] = ("upload", "calibration")
        if converter.source == "onnx":
            options[TF_PTQ] = True  # the stage option stages.convert.tf_ptq.wanted reads
    return StageDef(
        names.convert(converter.name),
        converter.env,
        converter.entry,
        {**source, **COMMON},
        options,
        candidate=converter.name,
        role="convert",
    )


def validate_stage(converter: Converter) -> StageDef:
    return StageDef(
        names.validate(converter.name),
        "torch",
        registry.entry("validate"),
        {"tflite": (names.convert(converter.name), "tflite_float32"), **COMMON},
        {"precision": "float32"},
        candidate=converter.name,
        role="validate",
    )


def validate_flex_stage(converter: Converter) -> StageDef:
    plain = validate_stage(converter)
    return StageDef(
        names.validate_flex(converter.name),
        FLEX_ENV,
        plain.entry,
        plain.inputs,
        {**plain.options, "runtime": "tensorflow"},
        candidate=converter.name,
        role="validate",
    )


SpecLike = PlanSpec | Mapping[str, Any]


def as_spec(spec: SpecLike) -> PlanSpec:
    """A ``PlanSpec``, from itself or from its stored JSON."""
    return spec if isinstance(spec, PlanSpec) else PlanSpec.from_json(dict(spec))


def candidates(spec: SpecLike) -> list[str]:
    """The TFLite converters this job tries, in order."""
    spec = as_spec(spec)
    order = PRIORITY.get(spec.model_format, PRIORITY["state_dict"])
    if spec.toolchain in CONVERTERS:
        return [spec.toolchain] if spec.toolchain in order else []
    available = spec.available_toolchains or tuple(CONVERTERS)
    return [name for name in order if name in available]


def quantize_sources(converters: list[str], int8: bool = False) -> dict[str, tuple[str, str]]:
    """The quantize stage's other float32 files: ``tflite_<candidate>`` for every candidate
    (the worker names those that passed, in selection order, in its ``sources`` option), and
    with ``int8``, ``<INT8_OUTPUTS file>_<candidate>`` for every candidate: the int8 file its
    convert stage writes then (``tflite_int8_pt2e_litert-torch``, ``tflite_int8_tf_ptq_onnx2tf``,
    ...), one more int8 attempt on that candidate's source."""
    files = {f"tflite_{name}": (names.convert(name), "tflite_float32") for name in converters}
    for name in converters if int8 else []:
        output = INT8_OUTPUTS[CONVERTERS[name].source]
        files[f"{output}_{name}"] = (names.convert(name), output)
    return files


def saved_model_candidates(spec: SpecLike) -> list[str]:
    """The converters that write this job's SavedModel, in order (none without the target).

    Every converter with ``saved_model=True`` that the job may use; a ``toolchain``
    naming one of them keeps only it, one naming a converter without a SavedModel
    (litert-torch) leaves the choice of the SavedModel's to the order.
    """
    spec = as_spec(spec)
    if "saved_model" not in spec.targets:
        return []
    if spec.toolchain in CONVERTERS and CONVERTERS[spec.toolchain].saved_model:
        return [spec.toolchain]
    available = spec.available_toolchains or tuple(CONVERTERS)
    return [name for name in SAVED_MODEL_PRIORITY if name in available and CONVERTERS[name].saved_model]


def _stages(spec: PlanSpec) -> tuple[StageDef, ...]:
    """The chain for a normalized spec: only what its targets need."""
    stages = [EXPORT]
    tflite = "tflite" in spec.targets
    converters = candidates(spec) if tflite else []
    # A SavedModel candidate that is no .tflite candidate converts for the SavedModel alone.
    stages += [convert_stage(CONVERTERS[name]) for name in saved_model_candidates(spec) if name not in converters]
    flex = FLEX_ENV in (spec.available_toolchains or tuple(CONVERTERS))
    for name in converters:
        stages += [convert_stage(CONVERTERS[name], "int8" in spec.quantized), validate_stage(CONVERTERS[name])]
        if flex:
            stages.append(validate_flex_stage(CONVERTERS[name]))
    if tflite and spec.quantized:
        stages.append(
            StageDef(
                names.QUANTIZE,
                "torch",
                registry.entry("quantize"),
                {
                    "tflite": ("chosen", "tflite_float32"),
                    **quantize_sources(converters, "int8" in spec.quantized),
                    "calibration": ("upload", "calibration"),
                    **COMMON,
                },
                {"precisions": list(spec.quantized)},
                role="quantize",
            )
        )
    stages.append(REPORT)
    return tuple(stages)


@dataclass(frozen=True)
class Plan:
    """A job's stages, built once from its spec, with the lookups the worker makes."""

    spec: PlanSpec
    stages: tuple[StageDef, ...]

    @classmethod
    def of(cls, spec: SpecLike) -> Plan:
        spec = as_spec(spec)
        return cls(spec, _stages(spec))

    @cached_property
    def _by_name(self) -> dict[str, int]:
        return {definition.name: i for i, definition in enumerate(self.stages)}

    def stage(self, name: str) -> StageDef:
        try:
            return self.stages[self._by_name[name]]
        except KeyError:
            raise KeyError(f"stage {name!r} is not part of this job's plan") from None

    @cached_property
    def candidates(self) -> list[str]:
        """The TFLite converters this job tries, in order (none without a tflite target)."""
        return candidates(self.spec)

    @cached_property
    def saved_model_candidates(self) -> list[str]:
        """The converters that write this job's SavedModel, in order (none without the target)."""
        return saved_model_candidates(self.spec)

    @cached_property
    def onnx_consumers(self) -> list[str]:
        """The converters of this plan that read the exported ONNX file."""
        found = {s.candidate for s in self.stages if s.role == "convert" and s.candidate}
        return sorted(n for n in found if CONVERTERS[n].source == "onnx")

    def dependencies(self, name: str) -> list[str]:
        """The stages that must be over (succeeded, failed or skipped) before ``name`` runs.

        Under ``best`` only what a stage consumes, so the candidates convert and validate at
        the same time on their own queues; otherwise every earlier stage, because ``auto``
        decides after each candidate whether the next one runs at all.
        """
        index = self._by_name[name]
        earlier, definition = self.stages[:index], self.stages[index]
        if self.spec.toolchain != "best" or definition.role == "report":
            return [s.name for s in earlier]
        needed: set[str] = set()
        for source, _ in definition.inputs.values():
            if source == "chosen":  # the winner is known once every candidate is validated
                needed |= {s.name for s in earlier if s.role in ("convert", "validate")}
            elif source != "upload":
                needed.add(source)
        if names.is_validate_flex(definition.name):
            needed.add(names.validate(definition.candidate or ""))
        return [s.name for s in earlier if s.name in needed]


def plan_stages(spec: SpecLike) -> list[StageDef]:
    """The chain for a normalized spec: only what its targets need."""
    return list(Plan.of(spec).stages)


def dependencies(spec: SpecLike, name: str) -> list[str]:
    """``Plan.dependencies`` for one lookup."""
    return Plan.of(spec).dependencies(name)
