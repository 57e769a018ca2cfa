"""Choosing among TFLite candidates: by verdict, builtin-only, latency, then error.

Pure functions over the recorded stage results, used by the pipeline (what to skip,
what to quantize) and by the report (what was chosen and why the others lost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.jobs.plan import candidates, slug

VERDICT_RANK = {"pass": 0, "degraded": 1, "fail": 2}


@dataclass
class Candidate:
    name: str
    converted: bool
    metrics: dict[str, Any] | None  # the float32 validation of its .tflite, when it ran
    convert_error: dict[str, Any] | None

    @property
    def verdict(self) -> str:
        return (self.metrics or {}).get("verdict", "fail")

    @property
    def requires_flex(self) -> bool:
        return bool((self.metrics or {}).get("requires_flex"))

    @property
    def deliverable(self) -> bool:
        """Passes and runs in stock LiteRT."""
        return self.metrics is not None and self.verdict == "pass" and not self.requires_flex

    @property
    def latency(self) -> float:
        latency = (self.metrics or {}).get("latency_ms") or {}
        return float(latency.get("median_1_thread") or float("inf"))

    @property
    def error(self) -> float:
        worst = 0.0
        for output in ((self.metrics or {}).get("outputs") or {}).values():
            scale = output.get("scale") or 1.0
            max_abs = output.get("max_abs")
            # A missing error is unknown (worst); an exact 0.0 is perfect, not missing.
            worst = max(worst, float("inf") if max_abs is None else float(max_abs) / scale)
        return worst if self.metrics else float("inf")

    def rank(self) -> tuple[int, int, float, float]:
        return (VERDICT_RANK.get(self.verdict, 3), int(self.requires_flex), self.latency, self.error)


def validation(results: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    """The float32 validation of a candidate's .tflite: TensorFlow's run of a file that
    needs flex ops when there was one, else stock LiteRT's."""
    flex = results.get(f"validate_flex_{slug(name)}")
    return flex or results.get(f"validate_{slug(name)}") or {}


def collect(
    spec: dict[str, Any], results: dict[str, dict[str, Any]], errors: dict[str, dict[str, Any]] | None = None
) -> list[Candidate]:
    errors = errors or {}
    found = []
    for name in candidates(spec):
        convert = results.get(f"convert_{slug(name)}")
        metrics = validation(results, name).get("metrics", {}).get("tflite_float32")
        found.append(Candidate(name, convert is not None, metrics, errors.get(f"convert_{slug(name)}")))
    return found


def choose(spec: dict[str, Any], results: dict[str, dict[str, Any]]) -> Candidate | None:
    validated = [c for c in collect(spec, results) if c.metrics is not None]
    if not validated:
        return None
    if spec.get("toolchain", "auto") != "best":
        for candidate in validated:
            if candidate.deliverable:
                return candidate
    return min(validated, key=Candidate.rank)


def auto_satisfied(spec: dict[str, Any], results: dict[str, dict[str, Any]]) -> bool:
    """Under `auto`, a builtin-only candidate already passed: later candidates are skipped."""
    if spec.get("toolchain", "auto") != "auto":
        return False
    return any(c.deliverable for c in collect(spec, results))
