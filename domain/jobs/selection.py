"""Choosing among TFLite candidates: by verdict, builtin-only, keeping the spec's dynamic
dimensions, latency, then error; and among SavedModel candidates by the same rules (a
SavedModel has no flex ops and no measured latency, so: by verdict, then error).

Pure functions over the recorded stage results, used by the pipeline (what to skip,
what to quantize) and by the report (what was chosen and why the others lost).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.jobs.plan import SpecLike, as_spec, candidates, saved_model_candidates
from domain.jobs.records import Records
from stages.kit.results import Check, StageOutcome

VERDICT_RANK = {"pass": 0, "degraded": 1, "fail": 2}
RecordsLike = Records | Mapping[str, StageOutcome | Mapping[str, Any]]


@dataclass
class Candidate:
    name: str
    converted: bool
    metrics: Check | None  # the float32 validation of its .tflite, when it ran

    @property
    def verdict(self) -> str:
        return self.metrics.verdict if self.metrics is not None else "fail"

    @property
    def requires_flex(self) -> bool:
        return self.metrics is not None and self.metrics.requires_flex

    @property
    def deliverable(self) -> bool:
        """Passes and runs in stock LiteRT."""
        return self.metrics is not None and self.verdict == "pass" and not self.requires_flex

    @property
    def frozen(self) -> bool:
        """The file fixes a dimension the spec declares dynamic (``stages.kit.dims``)."""
        return self.metrics is not None and bool(self.metrics.frozen_dims)

    @property
    def latency(self) -> float:
        return self.metrics.latency if self.metrics is not None else float("inf")

    @property
    def error(self) -> float:
        return self.metrics.worst_error if self.metrics is not None else float("inf")

    def rank(self) -> tuple[int, int, int, float, float]:
        return (VERDICT_RANK.get(self.verdict, 3), int(self.requires_flex), int(self.frozen), self.latency, self.error)


def as_records(results: RecordsLike) -> Records:
    return results if isinstance(results, Records) else Records.of(results)


def collect(spec: SpecLike, results: RecordsLike) -> list[Candidate]:
    records = as_records(results)
    return [
        Candidate(name, records.convert(name) is not None, records.validation(name).check("tflite_float32"))
        for name in candidates(spec)
    ]


def choose(spec: SpecLike, results: RecordsLike) -> Candidate | None:
    validated = [c for c in collect(spec, results) if c.metrics is not None]
    if not validated:
        return None
    if as_spec(spec).toolchain != "best":
        # The first deliverable file that keeps the declared dynamic dimensions, else the first deliverable.
        for candidate in sorted(validated, key=lambda c: c.frozen):
            if candidate.deliverable:
                return candidate
    return min(validated, key=Candidate.rank)


def auto_satisfied(spec: SpecLike, results: RecordsLike) -> bool:
    """Under `auto`, a builtin-only candidate already passed and keeps the spec's dynamic
    dimensions: later candidates are skipped.

    Not for a job that asks for int8: its quantizers fall back to the other candidates'
    float32 files when the chosen one's fails or degrades (ai-edge-quantizer refuses
    onnx2tf's PADV2 in resnet18 and quantizes litert-torch's file of it; issue 12), so every
    candidate converts and validates; the float32 choice is still the first that passed.
    """
    spec = as_spec(spec)
    if spec.toolchain != "auto" or "int8" in spec.quantized:
        return False
    return any(c.deliverable and not c.frozen for c in collect(spec, results))


@dataclass
class SavedModelCandidate:
    """A converter that may write the job's SavedModel, and what it recorded.

    ``converted``: its convert stage succeeded; ``metrics``: the SavedModel's check in
    TensorFlow (None when none was written); ``failure``: ``{code, reason}`` the stage
    recorded when it converted but could not make the SavedModel.
    """

    name: str
    converted: bool
    metrics: Check | None
    failure: dict[str, Any] | None = None

    @property
    def verdict(self) -> str:
        return self.metrics.verdict if self.metrics is not None else "fail"

    @property
    def error(self) -> float:
        return self.metrics.worst_error if self.metrics is not None else float("inf")

    def rank(self) -> tuple[int, float]:
        return (VERDICT_RANK.get(self.verdict, 3), self.error)


def collect_saved_models(spec: SpecLike, results: RecordsLike) -> list[SavedModelCandidate]:
    """Every SavedModel candidate of the job, in order, with its recorded check."""
    records = as_records(results)
    found = []
    for name in saved_model_candidates(spec):
        convert = records.convert(name)
        produced = convert is not None and convert.output("saved_model") is not None
        failed = convert.info.get("failed") if convert is not None else None
        failure = failed.get("saved_model") if isinstance(failed, dict) else None
        metrics = convert.check("saved_model") if convert is not None and produced else None
        found.append(SavedModelCandidate(name, convert is not None, metrics, failure))
    return found


def choose_saved_model(spec: SpecLike, results: RecordsLike) -> SavedModelCandidate | None:
    """Under ``best`` the best SavedModel by (verdict, error); otherwise the first that
    passes, else the best of those written. None when no candidate wrote one."""
    written = [c for c in collect_saved_models(spec, results) if c.metrics is not None]
    if not written:
        return None
    if as_spec(spec).toolchain != "best":
        for candidate in written:
            if candidate.verdict == "pass":
                return candidate
    return min(written, key=SavedModelCandidate.rank)


def saved_model_satisfied(spec: SpecLike, results: RecordsLike) -> bool:
    """Under ``auto``, a SavedModel candidate already passed: later ones need not write one."""
    if as_spec(spec).toolchain != "auto":
        return False
    return any(c.verdict == "pass" for c in collect_saved_models(spec, results) if c.metrics is not None)


def tflite_failure(convert: StageOutcome) -> str | None:
    """``code: reason`` of a converter that succeeded without its float32 .tflite (it kept
    its SavedModel), from its ``info.failed``; None when it recorded no such failure."""
    failed = convert.info.get("failed")
    why = failed.get("tflite_float32") if isinstance(failed, dict) else None
    if not isinstance(why, dict):
        return None
    return f"{why.get('code')}: {why.get('reason')}"
