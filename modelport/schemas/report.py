"""The report (``GET /v1/jobs/{id}/report``) as a model, for OpenAPI and for clients.

docs/report.md says what each field means; ``domain.jobs.report`` writes it. The route
returns the stored JSON unchanged, so every model here allows extra fields: a number a
stage adds reaches clients before it is named here. Units: sizes in bytes, times in
seconds unless the name says ``_ms``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Verdict = Literal["pass", "degraded", "fail"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ReportModel(_Open):
    """The uploaded model: its format, file and, for a state dict, the architecture."""

    format: str
    filename: str | None
    size: int
    sha256: str
    architecture: dict[str, Any] | None
    parameters: int | None


class ReportReference(_Open):
    """The runtime that produced the reference outputs and its packages' versions."""

    runtime: str
    versions: dict[str, Any]


class ReportValidation(_Open):
    """How many samples were compared, where they came from (``uploaded`` or
    ``synthetic (seed N)``) and the relative tolerance per precision."""

    samples: int | None
    source: str
    tolerance: dict[str, float] | None


class SignatureOutput(_Open):
    name: str
    shape: list[int | str] | None


class OutputCheck(_Open):
    """One output compared to PyTorch: absolute and relative errors against ``scale``
    (max |reference|); for class scores also top-k agreement and the top-2 margin."""

    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    scale: float | None = None


class ToleranceRule(_Open):
    """The pass rule an artifact was judged by, e.g. ``max_abs/scale`` at most ``value``."""

    metric: str
    value: float


class ArtifactEntry(_Open):
    """A produced artifact and its check (docs/report.md lists the extra fields per kind)."""

    name: str
    kind: Literal["onnx", "saved_model", "tflite"]
    precision: str
    toolchain: str
    size: int
    sha256: str
    runtime: str
    verdict: Verdict
    reasons: list[str]
    tolerance: ToleranceRule | None
    samples: int | None
    outputs: dict[str, OutputCheck]
    seconds: float | None
    # .onnx
    opset: int | None = None
    exporter: str | None = None
    # .tflite
    operators: dict[str, Any] | None = None
    transpose_count: int | None = None
    latency_ms: dict[str, Any] | None = None
    requires_flex: bool | None = None
    signature: dict[str, Any] | None = None


class PrecisionOutcome(_Open):
    """A requested precision: ``produced`` (its artifact and verdict), ``not_produced``
    (``code`` and ``reason``) or ``not_requested`` (``reason``)."""

    status: Literal["produced", "not_produced", "not_requested"]
    artifact: str | None = None
    verdict: Verdict | None = None
    code: str | None = None
    reason: str | None = None
    # Quantized precisions: every attempt (quantizer, recipe, variant, source, source_file,
    # outcome, verdict, min_cosine, mean_abs_over_scale, top1_agreement, latency_ms,
    # size_bytes, float_ops, error_sources), in the order they ran.
    attempts: list[dict[str, Any]] | None = None


class StageEntry(_Open):
    name: str
    toolchain: str
    state: str
    seconds: float | None
    attempts: int
    peak_rss_bytes: int | None
    isolation: Any = None
    process_seconds: float | None = None  # the stage process, launch to exit
    startup_seconds: float | None = None  # of process_seconds: launch and framework imports


class CandidateAttempt(_Open):
    """A TFLite candidate: how it ended (``chosen``, ``lost: ...``, ``failed: code: message``,
    ``skipped: ...``), its numbers and provenance."""

    toolchain: str
    outcome: str
    chosen: bool
    verdict: Verdict | None
    requires_flex: bool | None
    latency_ms: dict[str, Any] | None
    runtime: str | None
    max_abs_over_scale: float | None
    reasons: list[str] = []
    size: int | None
    operators: dict[str, Any] | None
    transpose_count: int | None
    convert_seconds: float | None
    converter: Any
    exporter: str | None
    opset: int | None
    export_attempts: Any
    seed: int
    versions: dict[str, Any]
    lock_sha256: str | None


class SavedModelAttempt(_Open):
    """A SavedModel candidate (a converter that writes one): how it ended (``chosen``,
    ``lost: ...``, ``failed: code: message``, ``skipped: ...``), its numbers in TensorFlow
    and provenance."""

    toolchain: str
    outcome: str
    chosen: bool
    verdict: Verdict | None
    runtime: str | None
    max_abs_over_scale: float | None
    reasons: list[str] = []
    size: int | None
    signature: dict[str, Any] | None
    convert_seconds: float | None
    converter: Any
    exporter: str | None
    opset: int | None
    seed: int
    versions: dict[str, Any]
    lock_sha256: str | None


class Report(_Open):
    """The accuracy and performance report of a finished job (``report_version`` 2)."""

    report_version: int
    job_id: str
    generated_at: str
    verdict: Literal["pass", "fail"]
    reasons: list[str]
    model: ReportModel
    reference: ReportReference
    validation: ReportValidation
    inputs: list[dict[str, Any]]
    outputs: list[SignatureOutput]
    artifacts: list[ArtifactEntry]
    precisions: dict[str, PrecisionOutcome]
    stages: list[StageEntry]
    attempts: list[CandidateAttempt]
    saved_model_attempts: list[SavedModelAttempt] = []
