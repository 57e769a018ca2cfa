"""What the worker records of a stage and reads back: frozen stdlib dataclasses.

A stage process writes ``{"ok", "outputs", "metrics", "info"}`` (``stages.kit.contract``);
the worker stores its files and records, as the stage run's ``result``::

    {"outputs": {"onnx": {"key", "size", "sha256", "file"}, ...},
     "metrics": {"onnx": {...a Check...}, ...},   # per artifact, by logical name
     "info": {...},                                # per role: ExportInfo, ConvertInfo, ...
     "process_seconds", "startup_seconds", "peak_rss_bytes", "isolation", "lock_sha256", "log_key"}

A failed stage records ``{"log_tail"}`` (a tolerant one; the job's error has a fatal one's)
with the ``peak_rss_bytes`` and ``process_seconds`` of a process that ran, and a skipped
one ``{"skipped_reason"}`` (``RunNote``). ``from_json`` reads a recorded result once (every key optional, as in
results recorded before these types existed); ``to_json`` writes the same JSON, key for
key. The fields the report copies verbatim stay in ``raw`` (a ``Check``'s or an info's
source object), so a number a stage adds reaches the report without a change here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stages.kit.fields import nested, present, read_fields


def _object(raw: Any) -> dict[str, Any]:
    return dict(raw) if isinstance(raw, dict) else {}


@dataclass(frozen=True)
class StageReply:
    """A stage process's result file as the worker reads it (``stages.kit.contract``):
    ``outputs`` are file names in its output folder by logical name; a stage that refused
    has ``ok`` false and an error code and message."""

    ok: bool
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error_code: str = "stage_failed"
    error_message: str = "the stage failed"

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StageReply:
        return read_fields(
            cls,
            raw,
            ok=bool(nested(raw, "ok")),
            error_code=nested(raw, "error", "code"),
            error_message=nested(raw, "error", "message"),
        )

    def to_json(self) -> dict[str, Any]:
        if not self.ok:
            return {"ok": False, "error": {"code": self.error_code, "message": self.error_message}}
        return {"ok": True, "outputs": self.outputs, "metrics": self.metrics, "info": self.info}


@dataclass(frozen=True)
class StoredFile:
    """A stage output in the object store: ``key``, ``size`` in bytes, hex ``sha256``, file name."""

    key: str = ""
    size: int = 0
    sha256: str = ""
    file: str = ""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StoredFile:
        return read_fields(cls, raw)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "sha256": self.sha256, "file": self.file}


@dataclass(frozen=True)
class Check:
    """One artifact's validation against the PyTorch reference (``metrics[<artifact>]``).

    ``verdict`` is ``pass``, ``degraded`` or ``fail`` (``fail`` when the stage wrote none);
    ``reasons`` is None when the stage wrote none; ``outputs`` maps each output name to its
    numbers (``max_abs``, ``scale``, ``cosine``, ...); ``latency_ms`` holds
    ``median_1_thread`` and friends in milliseconds. ``raw`` is the object as recorded.
    """

    verdict: str = "fail"
    reasons: list[str] | None = None
    tolerance: dict[str, Any] | None = None  # the pass rule: {"metric": "max_abs/scale", "value": 1e-4}
    samples: int | None = None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float | None = None
    requires_flex: bool = False
    latency_ms: dict[str, Any] | None = None
    operators: Any = None
    transpose_count: int | None = None
    toolchain: str | None = None  # quantize: the library that made the file
    warnings: list[str] | None = None
    calibration_warning: str | None = None  # quantize: synthetic calibration, accuracy unknown
    frozen_dims: list[dict[str, Any]] | None = None  # declared dynamic dimensions the file fixes
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Check:
        return read_fields(
            cls,
            raw,
            requires_flex=bool(nested(raw, "requires_flex")),
            calibration_warning=nested(raw, "calibration", "warning"),
            raw=dict(raw),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)

    def present(self, keys: Iterable[str]) -> dict[str, Any]:
        """The recorded values of those of ``keys`` the stage wrote, in ``keys``' order."""
        return {key: self.raw[key] for key in keys if key in self.raw}

    @property
    def latency(self) -> float:
        """The single-thread median latency in milliseconds; infinite when unmeasured."""
        return float(nested(self.latency_ms, "median_1_thread") or float("inf"))

    @property
    def worst_error(self) -> float:
        """The largest ``max_abs / scale`` over the outputs; a missing ``max_abs`` is
        unknown, so infinite (an exact 0.0 is perfect, not missing)."""
        worst = 0.0
        for output in self.outputs.values():
            scale = output.get("scale") or 1.0
            max_abs = output.get("max_abs")
            worst = max(worst, float("inf") if max_abs is None else float(max_abs) / scale)
        return worst


@dataclass(frozen=True)
class ExportInfo:
    """``export_onnx``'s info: the reference and the ONNX file's provenance."""

    versions: dict[str, str] = field(default_factory=dict)
    opset: int | None = None
    exporter: str | None = None
    export_attempts: Any = None
    parameters: int | None = None
    reference_runtime: str = "pytorch"
    inputs: list[dict[str, Any]] | None = None  # the signature read from an ONNX graph or a program
    output_names: list[str] = field(default_factory=list)
    output_shapes: dict[str, Any] | list[Any] = field(default_factory=dict)
    onnx_tf_compatible: bool | None = None
    onnx_tf_reason: str = "opset above 15"
    probes: dict[str, Any] | None = None  # the sizes the reference ran at, or why only one (stages.kit.probes)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ExportInfo:
        return read_fields(cls, raw)

    def outputs(self) -> list[dict[str, Any]]:
        """The model's outputs as ``[{"name", "shape"}]`` in PyTorch's flattened order."""
        shapes = self.output_shapes
        if isinstance(shapes, dict):
            return [{"name": name, "shape": shapes.get(name)} for name in self.output_names]
        return [{"name": name, "shape": shape} for name, shape in zip(self.output_names, shapes, strict=False)]


# The int8 files convert stages make besides the float32 one, by variant (the name of their
# stage info entry and of their quantize.litert attempt): litert-torch's PT2E file
# (stages.convert.litert_torch_pt2e), TensorFlow's full-integer quantization of a SavedModel
# (stages.convert.tf_ptq). The one place these names are spelt; the plan, the stages and
# quantize.litert take them from here.
PT2E = "pt2e"
TF_PTQ = "tf_ptq"
PREBUILT_VARIANTS = (PT2E, TF_PTQ)


def prebuilt_output(variant: str) -> str:
    """The convert stage's output name of ``variant``'s int8 file (``tflite_int8_pt2e``); the
    quantize stage's input is that name with ``_<candidate>`` appended."""
    return f"tflite_int8_{variant}"


@dataclass(frozen=True)
class ConvertInfo:
    """A converter's info: its flags, versions, layout, the inputs it moved to channel-last and,
    in an int8 job, about the int8 file it made besides (info entries ``PREBUILT_VARIANTS``:
    litert-torch's ``pt2e``, an ONNX converter's ``tf_ptq``), by variant: why it could not be
    made (``prebuilt_errors``) and the version of the quantizer that made it
    (``prebuilt_versions``, where the entry names one)."""

    versions: dict[str, str] = field(default_factory=dict)
    converter: Any = None
    layout: str | None = None
    input_transposes: Any = None
    prebuilt_errors: dict[str, str] = field(default_factory=dict)
    prebuilt_versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ConvertInfo:
        entries = {variant: nested(raw, variant) or {} for variant in PREBUILT_VARIANTS}
        return read_fields(
            cls,
            raw,
            input_transposes=nested(raw, "signature", "input_transposes"),
            prebuilt_errors={v: str(e["error"]) for v, e in entries.items() if e.get("error")},
            prebuilt_versions={v: str(e["version"]) for v, e in entries.items() if e.get("version")},
        )


@dataclass(frozen=True)
class ValidateInfo:
    """A validation's info: the interpreter that ran the file and the file's signature."""

    runtime: str | None = None
    tflite_inputs: Any = None
    tflite_outputs: Any = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ValidateInfo:
        return read_fields(cls, raw)


@dataclass(frozen=True)
class QuantizeInfo:
    """The quantizer's info: its runtime, per precision it could not make ``{code, reason}``,
    and per precision every attempt (quantizer, recipe, source file, outcome, numbers)."""

    runtime: str | None = None
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per precision, in order

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> QuantizeInfo:
        return read_fields(cls, raw)


InfoT = TypeVar("InfoT", ExportInfo, ConvertInfo, ValidateInfo, QuantizeInfo)


@dataclass(frozen=True)
class StageOutcome:
    """A succeeded stage's recorded result (see the module docstring).

    ``metrics`` and ``info`` are kept as recorded; read them through ``check`` and
    ``info_as`` (``ExportInfo``, ``ConvertInfo``, ``ValidateInfo``, ``QuantizeInfo``).
    """

    outputs: dict[str, StoredFile] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    process_seconds: float | None = None
    peak_rss_bytes: int | None = None
    isolation: Any = None
    lock_sha256: str | None = None
    log_key: str | None = None
    startup_seconds: float | None = None  # of process_seconds: launch and framework imports

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StageOutcome:
        outputs = present(nested(raw, "outputs"))
        return read_fields(cls, raw, outputs={name: StoredFile.from_json(out) for name, out in outputs.items()})

    def to_json(self) -> dict[str, Any]:
        return {
            "outputs": {name: out.to_json() for name, out in self.outputs.items()},
            "metrics": self.metrics,
            "info": self.info,
            "process_seconds": self.process_seconds,
            "startup_seconds": self.startup_seconds,
            "peak_rss_bytes": self.peak_rss_bytes,
            "isolation": self.isolation,
            "lock_sha256": self.lock_sha256,
            "log_key": self.log_key,
        }

    def output(self, name: str) -> StoredFile | None:
        return self.outputs.get(name)

    def check(self, name: str) -> Check | None:
        """The validation of the artifact ``name``; None when the stage recorded none."""
        raw = self.metrics.get(name)
        return Check.from_json(raw) if isinstance(raw, dict) and raw else None

    def info_as(self, kind: type[InfoT]) -> InfoT:
        """The info read as the role's type, e.g. ``outcome.info_as(ExportInfo).opset``."""
        return kind.from_json(self.info)


@dataclass(frozen=True)
class RunNote:
    """What a stage run that did not succeed records: the log's tail of a failed stage
    (at most 4,000 characters) and the usage of its process (``peak_rss_bytes``,
    ``process_seconds``; None when none ran to its end), or why a stage was skipped.
    ``from_json`` of any stage's result reads its usage (a succeeded one's too)."""

    skipped_reason: str | None = None
    log_tail: str | None = None
    peak_rss_bytes: int | None = None
    isolation: Any = None
    process_seconds: float | None = None
    startup_seconds: float | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> RunNote:
        return read_fields(cls, raw)

    def to_json(self) -> dict[str, Any]:
        if self.skipped_reason is not None:
            return {"skipped_reason": self.skipped_reason}
        usage = {"peak_rss_bytes": self.peak_rss_bytes, "process_seconds": self.process_seconds}
        return {"log_tail": self.log_tail, **{key: value for key, value in usage.items() if value is not None}}
