"""A job's plan run stage by stage as the worker runs it, without the queue and the store.

``run_plan`` takes a normalized spec, builds its ``domain.jobs.plan.Plan`` and runs every
stage of it in order in its toolchain interpreter (``stage_runner.run_stage``): each input
resolved from the uploads or an earlier stage's output as ``worker.execute`` resolves it
(``chosen``: ``domain.jobs.selection.choose`` over the stages recorded so far), each option
the worker adds (its operator settings, the stage's own, and what a conversion tells the
stages after it: a validation's ``input_transposes``, the quantize stage's ``sources`` from
``worker.execute.quantize_sources``). Used by the stage tests that must see what a whole job
would, such as tests/stages/test_int8_families.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from domain.jobs import names
from domain.jobs.plan import Plan, StageDef
from domain.jobs.records import Records
from domain.jobs.selection import choose
from stages.kit.results import ConvertInfo
from tests.support.stage_runner import StageRun, run_stage
from worker.execute import Claim, quantize_sources


@dataclass
class PlanRun:
    """The stages of one job's plan that ran, by stage name, and the plan itself."""

    plan: Plan
    runs: dict[str, StageRun] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stage name -> why it did not run

    def records(self) -> Records:
        """The succeeded stages as the worker records them (outputs keyed by their local path)."""
        return Records.of({name: recorded(run) for name, run in self.runs.items() if run.ok})


def recorded(run: StageRun) -> dict[str, Any]:
    """A stage result as the worker stores it: each output a ``StoredFile`` whose key is its path."""
    outputs = {
        name: {"key": str(run.output_dir / file), "file": file} for name, file in (run.result["outputs"] or {}).items()
    }
    return {"outputs": outputs, "metrics": run.result.get("metrics") or {}, "info": run.result.get("info") or {}}


def _input(source: str, name: str, uploads: Mapping[str, Path], done: PlanRun) -> Path | None:
    """Where a stage input comes from (None: the worker would not pass it)."""
    if source == "upload":
        return uploads.get(name)
    records = done.records()
    if source == "chosen":
        chosen = choose(done.plan.spec, records)
        if chosen is None:
            return None
        source = names.convert(chosen.name)
    earlier = records.stage(source)
    stored = earlier.output(name) if earlier is not None else None
    return Path(stored.key) if stored is not None else None


def _conversion_options(definition: StageDef, done: PlanRun) -> dict[str, Any]:
    """What the worker tells a validation or the quantize stage of the conversion before it."""
    records = done.records()
    candidate = definition.candidate
    options: dict[str, Any] = {}
    if definition.role == "quantize":
        chosen = choose(done.plan.spec, records)
        claim = Claim(definition, done.plan, "", None, None, records)
        options["sources"] = quantize_sources(claim, chosen)
        candidate = chosen.name if chosen else None
    elif definition.role != "validate":
        return options
    convert = records.convert(candidate) if candidate else None
    transposes = convert.info_as(ConvertInfo).input_transposes if convert is not None else None
    return {**options, **({"input_transposes": transposes} if transposes else {})}


def run_plan(
    spec: dict[str, Any], uploads: Mapping[str, Path], work: Path, settings: Mapping[str, Any] | None = None
) -> PlanRun:
    """Run every stage of ``spec``'s plan but the report, in plan order.

    ``uploads``: ``model`` and optionally ``calibration`` / ``inputs`` (files); ``settings``:
    the operator options the worker adds to every stage (``allowed_architectures``, ...).
    A stage whose candidate's conversion failed, a flex validation of a file that needs no
    flex ops, and a quantize stage without a chosen file are skipped (``PlanRun.skipped``),
    as the worker skips them. Every candidate runs: the ``auto`` rule that skips the later ones
    once one passes (``domain.jobs.selection.auto_satisfied``) is not modelled, so a spec here
    is one with ``toolchain: best`` or one that asks for int8. Each stage's request, result and log stay in
    ``work/<stage name>``. Raises nothing for a failed stage: its ``StageRun`` says so.
    """
    done = PlanRun(Plan.of(spec))
    for definition in done.plan.stages:
        if definition.entry is None:  # the report runs in the worker itself
            continue
        inputs: dict[str, Path] = {}
        for logical, (source, name) in definition.inputs.items():
            path = _input(source, name, uploads, done)
            if path is not None:
                inputs[logical] = path
        missing = [logical for logical in ("tflite", "onnx", "model") if logical in definition.inputs]
        if any(logical not in inputs for logical in missing):
            done.skipped[definition.name] = f"no {', '.join(m for m in missing if m not in inputs)} to read"
            continue
        if names.is_validate_flex(definition.name):
            check = done.records().validation(definition.candidate or "").check("tflite_float32")
            if check is None or not check.requires_flex:
                done.skipped[definition.name] = "the file needs no flex ops"
                continue
        stage_spec = done.plan.spec.to_json()
        if definition.role == "export":
            stage_spec["onnx_consumers"] = done.plan.onnx_consumers
        options = {**(settings or {}), **definition.options, **_conversion_options(definition, done)}
        done.runs[definition.name] = run_stage(
            definition.toolchain, definition.entry, work / definition.name, inputs, stage_spec, options
        )
    return done
