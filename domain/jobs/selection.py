"""Choosing among TFLite candidates: by verdict, builtin-only, keeping the spec's dynamic
dimensions, latency, then error.

Pure functions over the recorded stage results, used by the pipeline (what to skip,
what to quantize) and by the report (what was chosen and why the others lost).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.jobs.plan import SpecLike, as_spec, candidates
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
    dimensions: later candidates are skipped."""
    if as_spec(spec).toolchain != "auto":
        return False
    return any(c.deliverable and not c.frozen for c in collect(spec, results))
