"""One precision of ``quantize.litert``: its attempts (float32 source file x recipe), the kept one.

An attempt quantizes one float32 file with one recipe in the quantizer child
(``stages.quantize.child``), runs the result on the validation samples in stock LiteRT and
judges it (``stages.quantize.verdict``). The sources are every passing candidate's float32
file in selection order; int8 has two recipes per source (``RECIPES``: the full-integer
one, then the one that keeps the numerically sensitive ops and the last layer float), and
before them, on litert-torch's source, litert-torch's PT2E file (``PT2E``: made from the
PyTorch module by ``convert.litert_torch``; here only copied, checked and judged). PT2E
comes first because it beat the full-integer recipe on the same model's float32 file
(cosine to PyTorch, 16 calibration / 4 validation samples, litert-torch 0.10.0,
ai-edge-quantizer 0.10.0): ResNet-style block with a padded max-pool 0.99996 vs 0.99982,
tiny CNN 0.99948 vs 0.99799; the float_sensitive recipe, which keeps the last layer float,
reached 0.99998 / 0.99976. On a 2-layer ViT (torchvision, 32x32, hidden 32) PT2E passed
at 0.9951 where both ai-edge-quantizer recipes failed (0.8653 / 0.8733).
On onnx-tf's and onnx2tf's sources TensorFlow's full-integer file (``TF_PTQ``) comes first
too; the measurements behind that order are in ``stages.quantize.prebuilt``.
Outside ``toolchain: best`` the attempts stop at the first that passes; under ``best``
all run. The file kept is the best by verdict, then min cosine (higher, to 4 digits),
then single-thread latency; a file the runtime refuses is never kept. Every attempt is listed
(``summary``) with its quantizer, recipe, source file, outcome and numbers. A dynamic_range
or int8 attempt whose verdict is ``degraded`` or ``fail`` also gets ``error_sources``: the op
outputs that drift most from its float32 source file (``stages.quantize.error_sources``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.kit.child import ChildReport, RuntimeRun, run_child, run_litert
from stages.kit.codes import StageCode
from stages.kit.contract import StageRequest
from stages.kit.options import QuantizeOptions, RuntimeOptions
from stages.kit.spec import PlanSpec
from stages.kit.tflite_boundary import Boundary
from stages.quantize import error_sources, prebuilt
from stages.quantize.int8_io import describe, int8_io_gaps
from stages.quantize.verdict import ADVISORY, judge

QUANTIZER_TIMEOUT = 1800
RECIPES: dict[str, tuple[str, ...]] = {"int8": ("default", "float_sensitive")}
# Every int8 attempt on one source, in order: a prebuilt file (``stages.quantize.prebuilt``)
# only where the source has one (see the module docstring for the measurements behind it).
INT8_ORDER = (prebuilt.PT2E, prebuilt.TF_PTQ, "default", "float_sensitive")
VERDICT_RANK = {"pass": 0, "degraded": 1, "fail": 2}
COSINE_DIGITS = 4  # cosines equal to 4 digits are a tie: latency decides


@dataclass
class Job:
    """What every attempt on one float32 source file shares."""

    request: StageRequest
    tflite: Path
    boundary: Boundary
    keys: dict[str, str]  # spec input name -> the file's signature key
    transposes: dict[str, list[int]]
    samples_path: Path
    samples: dict[str, Any]
    input_names: list[str]
    reference: dict[str, Any]
    float_outputs: dict[str, Any] | None
    runtime: RuntimeOptions  # how each file runs (input_transposes resolved)
    options: QuantizeOptions
    int8_io: bool = False  # int8 only: int8 inputs and outputs instead of float32
    candidate: str | None = None  # the converter that wrote the source file
    # int8 files another stage already made from the same model, by variant (``pt2e``,
    # ``tf_ptq``), why the ones it could not make are missing, and the versions of the
    # quantizers that made them where this environment has none (``stages.quantize.prebuilt``)
    prebuilt: dict[str, Path] = field(default_factory=dict)
    prebuilt_failed: dict[str, str] = field(default_factory=dict)
    prebuilt_versions: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> PlanSpec:
        return self.request.spec

    @property
    def source_label(self) -> str:
        return f"{self.candidate}'s float32 file" if self.candidate else self.tflite.name

    def recipes(self, precision: str) -> tuple[str, ...]:
        """This source's attempts at ``precision``, in order: for int8 ``INT8_ORDER``, the
        prebuilt files (PT2E, TensorFlow's) where the source has them and ai-edge-quantizer's recipes."""
        own = RECIPES.get(precision, ("default",))
        if precision != "int8":
            return own
        made = {*self.prebuilt, *self.prebuilt_failed}
        return tuple(recipe for recipe in INT8_ORDER if recipe in own or recipe in made)

    def file_for(self, recipe: str) -> str:
        """The file an attempt quantized (the float32 source) or took (a prebuilt file, by the
        name its convert stage writes, ``model_int8_tf_ptq.tflite``: the same whether or not the
        stage made it, not the stage input it arrived as, ``tflite_int8_tf_ptq_onnx-tf``)."""
        made = prebuilt.VARIANTS.get(recipe)
        return made.file if made else self.tflite.name


@dataclass
class Attempt:
    """One quantizer run and its check; ``path`` is None when nothing usable was written."""

    job: Job
    recipe: str
    entry: dict[str, Any] | None
    failure: dict[str, str] | None
    path: Path | None

    @property
    def label(self) -> str:
        """How outcomes and reasons name this attempt."""
        made = prebuilt.VARIANTS.get(self.recipe)
        if made is not None:
            return f"{self.job.candidate or 'the converter'}'s {made.label}"
        return f"{self.job.source_label} with the {self.recipe} recipe"

    def rank(self) -> tuple[int, float, float]:
        entry = self.entry or {}
        cosine = entry.get("min_cosine")
        latency = (entry.get("latency_ms") or {}).get("median_1_thread")
        return (
            VERDICT_RANK.get(str(entry.get("verdict")), 3),
            -round(cosine if cosine is not None else -1.0, COSINE_DIGITS),
            float(latency) if latency is not None else float("inf"),
        )

    def summary(self, outcome: str) -> dict[str, Any]:
        entry = self.entry or {}
        means = [o.get("mean_abs_over_scale") for o in entry.get("outputs", {}).values()]
        name, _, release = prebuilt.quantizer(self.recipe, self.job.prebuilt_versions)
        made = prebuilt.VARIANTS.get(self.recipe)
        # A prebuilt variant that failed has no entry: name its recipe as a made one does.
        fallback = str(made.recipe["name"]) if made else self.recipe
        return {
            "quantizer": f"{name} {release or '?'}",
            "recipe": ((entry.get("quantizer") or {}).get("recipe") or {}).get("name") or fallback,
            "variant": self.recipe,
            "source": self.job.candidate,
            "source_file": self.job.file_for(self.recipe),
            "outcome": outcome,
            "verdict": entry.get("verdict"),
            "reasons": list(entry.get("reasons") or [])[:4],
            "min_cosine": entry.get("min_cosine"),
            "mean_abs_over_scale": max((m for m in means if m is not None), default=None),
            "top1_agreement": entry.get("top1_agreement"),
            "latency_ms": (entry.get("latency_ms") or {}).get("median_1_thread"),
            "size_bytes": entry.get("size_bytes"),
            "float_ops": entry.get("float_ops"),
            "error_sources": entry.get("error_sources"),
        }


def best_of(
    precision: str,
    jobs: Iterator[Job],
    calibrate: Callable[[Job], tuple[Path | None, dict[str, Any] | None]],
    target: Path,
    work: Path,
    try_all: bool,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[dict[str, Any]]]:
    """(the kept file's metrics - or, when none is usable, those of the best file the runtime
    refused - or None; the precision's ``failed`` entry or None; every attempt's summary).
    The kept file is moved to ``target``."""
    attempts: list[Attempt] = []
    for job in jobs:
        calibration_file, calibration_info = calibrate(job) if precision == "int8" else (None, None)
        for recipe in job.recipes(precision):
            path = work / f"{precision}-{len(attempts)}.tflite"
            entry, failure = produce(job, precision, recipe, calibration_file, calibration_info, path, work)
            attempts.append(Attempt(job, recipe, entry, failure, path if failure is None else None))
            if not try_all and failure is None and entry is not None and entry["verdict"] == "pass":
                break
        if not try_all and attempts[-1].path is not None and attempts[-1].rank()[0] == 0:
            break
    usable = [a for a in attempts if a.path is not None and a.entry is not None]
    kept = min(usable, key=Attempt.rank) if usable else None
    summaries = []
    for attempt in attempts:
        if attempt is kept:
            outcome = "kept"
        elif attempt.failure is not None:
            outcome = f"failed: {attempt.failure['code']}: {attempt.failure['reason']}"
        else:
            outcome = (
                f"lost: {kept.label} ranks higher (verdict, then min cosine to 4 decimals, then latency)"
                if kept is not None
                else "lost"
            )
        summaries.append(attempt.summary(outcome))
    if kept is None or kept.path is None or kept.entry is None:
        first = next(a.failure for a in attempts if a.failure is not None) if attempts else None
        reason = "; ".join(f"{a.label}: {a.failure['reason'] if a.failure else '?'}" for a in attempts)
        code = first["code"] if first else StageCode.QUANTIZATION_FAILED
        if len(attempts) == 1:
            reason = attempts[0].failure["reason"] if attempts[0].failure else reason
        checked = [a for a in attempts if a.entry is not None]  # the runtime refused them
        shown = min(checked, key=Attempt.rank).entry if checked else None
        if shown is not None:
            shown["attempts"] = summaries
        return (
            shown,
            {"code": code, "reason": reason if len(attempts) == 1 else f"every attempt failed: {reason}"},
            summaries,
        )
    shutil.move(str(kept.path), target)
    entry = kept.entry
    entry["source"] = {"candidate": kept.job.candidate, "file": kept.job.file_for(kept.recipe)}
    entry["attempts"] = summaries
    return entry, None, summaries


def produce(
    job: Job,
    precision: str,
    recipe: str,
    calibration_file: Path | None,
    calibration_info: dict[str, Any] | None,
    target: Path,
    work: Path,
) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """(the attempt's metrics, or None; its failure ``{code, reason}``, or None when usable)."""
    int8_io = job.int8_io and precision == "int8"
    if recipe in job.prebuilt_failed:
        return None, {"code": StageCode.QUANTIZATION_FAILED, "reason": job.prebuilt_failed[recipe]}
    runtime = job.runtime
    if recipe in job.prebuilt:
        produced = prebuilt.copy_file(recipe, job.prebuilt[recipe], target)
        if "error" not in produced:
            runtime = prebuilt.runtime_for(job.runtime, target, job.samples, job.input_names)
    else:
        produced = quantize(
            precision,
            recipe,
            job.tflite,
            target,
            calibration_file,
            job.boundary.signature_key,
            job.options,
            work,
            int8_io,
        )
    if "error" in produced:
        target.unlink(missing_ok=True)
        return None, {"code": StageCode.QUANTIZATION_FAILED, "reason": produced["error"]}
    entry, failure = validate(job, precision, target, runtime)
    size = target.stat().st_size
    name, library, release = prebuilt.quantizer(recipe, job.prebuilt_versions)
    entry.update(
        {
            "toolchain": name,
            "quantizer": {
                "library": library,
                "version": release,
                "recipe": produced["recipe"],
                # graph outputs ai-edge-quantizer had swapped for int8 copies (swapped_outputs)
                "restored_outputs": produced["restored_outputs"],
            },
            "float_ops": produced["float_ops"],
            "calibration": calibration_info
            if precision == "int8"
            else {"source": "none", "samples": 0, "note": "this recipe needs no calibration"},
            "size_bytes": size,
            "size_ratio_vs_float32": round(size / job.tflite.stat().st_size, 4),
            "quantize_seconds": produced["wall_seconds"],
            "seconds": round(produced["wall_seconds"] + entry["seconds"], 3),
        }
    )
    gaps = int8_io_gaps(job.boundary, entry["signature"]) if int8_io else []
    if gaps:
        entry.setdefault("warnings", []).extend(gaps)
    if entry["size_ratio_vs_float32"] > 0.95:
        entry.setdefault("warnings", []).append(
            "the file is barely smaller than the float32 one: the recipe found few weights to quantize"
        )
    if failure is None and error_sources.wanted(precision, entry["verdict"]):
        entry["error_sources"] = error_sources.locate(
            job.tflite, target, job.samples_path, job.input_names, job.transposes
        )
    if failure is not None:
        target.unlink(missing_ok=True)  # never delivered: it does not run in stock LiteRT
    return entry, failure


def quantize(
    precision: str,
    recipe: str,
    source: Path,
    target: Path,
    calibration_file: Path | None,
    signature_key: str | None,
    options: QuantizeOptions,
    work: Path,
    int8_io: bool = False,
) -> dict[str, Any]:
    """``{"recipe", "wall_seconds", ...}`` from the child, or ``{"error": reason}``."""
    stem = target.stem
    report_path = work / f"{stem}.json"
    job = {
        "float_model": str(source),
        "precision": precision,
        "recipe": recipe,
        "output": str(target),
        "report": str(report_path),
        "calibration": str(calibration_file) if calibration_file else None,
        "signature_key": signature_key or "serving_default",
        "threads": int(options.threads or 1),
        "int8_io": int8_io,
    }
    child = run_child(
        "stages.quantize.child",
        job,
        work / f"{stem}.job.json",
        float(options.quantizer_timeout_seconds or QUANTIZER_TIMEOUT),
        env={"TQDM_DISABLE": "1"},  # calibration progress bars would fill the log
        label=f"quantize.{precision}.{recipe}",
    )
    if child.code is None:
        return {"error": "the quantizer timed out"}
    if child.signal is not None:
        return {"error": f"the quantizer crashed with signal {child.signal}"}
    if child.code != 0 or not report_path.is_file() or not target.is_file():
        return {"error": f"ai-edge-quantizer failed: {_last_error(child.log)}"}
    report: dict[str, Any] = json.loads(report_path.read_text())
    report["wall_seconds"] = round(child.seconds, 3)
    return report


def validate(
    job: Job, precision: str, target: Path, runtime: RuntimeOptions | None = None
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """(the file's metrics, its failure when the runtime refused it); ``runtime``: how the file
    runs when not as its float32 source (``job.runtime``)."""
    from stages.kit.tflite_ops import operators

    started = time.monotonic()
    ops = operators(target)
    report = ChildReport()
    actual: dict[str, Any] | None = None
    failure: str | None = None
    if ops["flex"]:
        failure = f"requires_flex: the file uses Select-TF ops {ops['flex']}, which stock ai-edge-litert cannot run"
    else:
        ran = run_runtime(runtime or job.runtime, target, job.samples_path, job.input_names, list(job.reference))
        report, actual, failure = ran.report, ran.outputs, ran.failure
    entry = judge(precision, job.reference, actual or {}, job.spec)
    if failure:
        entry["verdict"] = "fail"
        entry["reasons"] = [*entry["reasons"], failure] if actual is not None else [failure]
    entry.update(
        {
            "advisory": precision in ADVISORY,
            "vs_float32": judge(precision, job.float_outputs, actual, job.spec)
            if job.float_outputs and actual
            else None,
            "operators": {"builtin": ops["builtin"], "flex": ops["flex"], "custom": ops["custom"]},
            "operator_counts": ops["counts"],
            "transpose_count": ops["transpose_count"],
            "requires_flex": bool(ops["flex"]),
            "signature": describe(target),
            "latency_ms": report.latency_ms,
            "precision": precision,
            "toolchain": "ai-edge-quantizer",
            "seconds": round(time.monotonic() - started, 3),
        }
    )
    if failure is None:
        return entry, None
    code = (
        StageCode.RUNTIME_CRASHED
        if report.crashed
        else StageCode.REQUIRES_FLEX
        if ops["flex"]
        else StageCode.RUNTIME_FAILED
    )
    return entry, {"code": code, "reason": failure}


def _last_error(log: str, limit: int = 500) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    line = next((line for line in reversed(lines) if "Error" in line.split(":")[0]), lines[-1] if lines else "")
    line = line or "no output"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run_runtime(
    options: RuntimeOptions, tflite: Path, samples: Path, input_names: list[str], output_names: list[str]
) -> RuntimeRun:
    """The file on the samples in the LiteRT child."""
    with tempfile.TemporaryDirectory(prefix="litert-") as work_dir:
        return run_litert(options.job(tflite, samples, input_names, output_names), Path(work_dir))
