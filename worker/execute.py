"""Running one claimed stage: its inputs fetched from the object store, the stage
process in its toolchain environment (``worker.runner``), its outputs and log stored,
and a heartbeat for as long as this worker holds it.

``worker.pipeline`` decides what runs and records the outcome; this module only runs.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import structlog
from sqlalchemy import update

from domain.config import Settings
from domain.db import session_scope
from domain.jobs import names
from domain.jobs.plan import Plan, StageDef
from domain.jobs.records import Records
from domain.jobs.selection import Candidate, choose, collect
from domain.jobs.states import JobStatus, StageState
from domain.models import Job, StageRun
from domain.models.base import utcnow
from domain.toolchains import get_toolchain
from stages.kit.codes import StageCode
from stages.kit.results import ConvertInfo, StageOutcome, StageReply, StoredFile
from worker.context import WorkerContext
from worker.runner import RunLimits, StageFailure, log_tail

log = structlog.get_logger()


@dataclass
class Claim:
    definition: StageDef
    plan: Plan
    model_key: str
    inputs_key: str | None
    calibration_key: str | None
    previous: Records  # earlier stages' recorded results, by stage name


def _input_key(claim: Claim, source: str, name: str) -> str | None:
    if source == "upload":
        uploads = {"model": claim.model_key, "inputs": claim.inputs_key, "calibration": claim.calibration_key}
        return uploads[name] if name in uploads else None
    if source == "chosen":
        chosen = choose(claim.plan.spec, claim.previous)
        source = names.convert(chosen.name) if chosen else ""
    earlier = claim.previous.stage(source)
    output = earlier.output(name) if earlier is not None else None
    return output.key if output else None


def _suffix_for(path: Path) -> str:
    with open(path, "rb") as handle:
        magic = handle.read(6)
    return ".npy" if magic == b"\x93NUMPY" else ".npz" if magic.startswith(b"PK") else ""


def stage_limits(settings: Settings) -> RunLimits:
    """A stage process's limits from the settings: timeout (s), memory of its process tree (bytes;
    default 60 % of the machine's RAM), threads and nice."""
    return RunLimits(
        timeout_seconds=settings.limits.stage_timeout_seconds,
        memory_bytes=settings.limits.stage_memory_bytes or int(psutil.virtual_memory().total * 0.6),
        threads=settings.limits.stage_threads,
        nice=settings.limits.stage_nice,
    )


def execute(ctx: WorkerContext, job_id: str, claim: Claim) -> StageOutcome:
    definition = claim.definition
    assert definition.entry is not None
    settings = ctx.settings
    work_root = (settings.data_dir / "work").resolve()
    work_root.mkdir(parents=True, exist_ok=True)
    prefix = f"{job_id}-{definition.name}-"
    for earlier in work_root.glob(f"{prefix}*"):
        # An earlier attempt whose worker was killed left its files: this claim is the
        # only attempt now running, so they are garbage.
        shutil.rmtree(earlier, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=work_root))
    try:
        inputs: dict[str, str] = {}
        (workdir / "in").mkdir()
        for logical, (source, name) in definition.inputs.items():
            key = _input_key(claim, source, name)
            if key is None:
                continue
            local = workdir / "in" / logical
            ctx.store.get_to_file(key, local)
            if logical in ("samples", "calibration") and source == "upload":
                local = local.rename(local.with_suffix(_suffix_for(local)))
            inputs[logical] = str(local)
        spec = claim.plan.spec.to_json()
        if definition.role == "export":
            # The ONNX file must be readable by every converter that will consume it.
            spec = {**spec, "onnx_consumers": claim.plan.onnx_consumers}
        request = {
            "stage": definition.entry,
            "inputs": inputs,
            "spec": spec,
            "options": {
                "allowed_architectures": settings.conversion.allowed_architectures,
                "enable_pickled_module": settings.conversion.enable_pickled_module,
                "threads": settings.limits.stage_threads,
                **definition.options,
                **_options_from_conversion(definition, claim),
            },
            "output_dir": str(workdir / "out"),
        }
        limits = stage_limits(settings)
        log_key = f"jobs/{job_id}/logs/{definition.name}.log"
        try:
            outcome = ctx.runner.run(
                definition.toolchain,
                definition.entry,
                request,
                workdir,
                limits,
                should_cancel=lambda: _check_in(ctx, job_id, definition.name),
            )
        finally:
            if (workdir / "stage.log").exists():
                ctx.store.put_file(log_key, workdir / "stage.log")
        reply = StageReply.from_json(outcome.result)
        if not reply.ok:
            raise StageFailure(StageCode(reply.error_code), reply.error_message, log_tail(workdir / "stage.log"))
        outputs: dict[str, StoredFile] = {}
        for logical, relative in reply.outputs.items():
            path = (workdir / "out" / relative).resolve()
            if not path.is_relative_to(workdir / "out") or not path.is_file():
                raise StageFailure(
                    StageCode.STAGE_CRASHED, f"stage output {logical!r} is missing or outside its folder"
                )
            stored = ctx.store.put_file(f"jobs/{job_id}/stages/{definition.name}/{path.name}", path)
            outputs[logical] = StoredFile(stored.key, stored.size, stored.sha256, path.name)
        return StageOutcome(
            outputs=outputs,
            metrics=reply.metrics,
            info=reply.info,
            process_seconds=round(outcome.seconds, 3),
            startup_seconds=outcome.startup_seconds,
            peak_rss_bytes=outcome.peak_rss_bytes,
            isolation=outcome.isolation,
            lock_sha256=get_toolchain(definition.toolchain).lock_hash,
            log_key=log_key,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _options_from_conversion(definition: StageDef, claim: Claim) -> dict[str, Any]:
    """What a validation must know about the file it checks (e.g. channel-last inputs)."""
    candidate = definition.candidate
    if definition.role == "quantize":
        chosen = choose(claim.plan.spec, claim.previous)
        candidate = chosen.name if chosen else None
        sources = quantize_sources(claim, chosen)
        convert = claim.previous.convert(candidate) if candidate else None
        transposes = convert.info_as(ConvertInfo).input_transposes if convert is not None else None
        return {"sources": sources, **({"input_transposes": transposes} if transposes else {})}
    if definition.role != "validate":
        return {}
    convert = claim.previous.convert(candidate) if candidate else None
    transposes = convert.info_as(ConvertInfo).input_transposes if convert is not None else None
    return {"input_transposes": transposes} if transposes else {}


def quantize_sources(claim: Claim, chosen: Candidate | None) -> list[dict[str, Any]]:
    """The float32 files the quantize stage tries, in selection order: the chosen one, then
    every other candidate that passed with builtin ops only (by rank under ``best``, by
    priority otherwise); each ``{"input", "candidate", "passed", "input_transposes"}``, and
    where the candidate's convert stage made (or tried) an int8 file besides,
    ``prebuilt_errors`` (variant -> why it could not be made: the quantize stage lists that
    as a failed attempt) and ``prebuilt_versions`` (variant -> the quantizer's version)."""
    if chosen is None:
        return []
    others = [c for c in collect(claim.plan.spec, claim.previous) if c.deliverable and c.name != chosen.name]
    if claim.plan.spec.toolchain == "best":
        others.sort(key=Candidate.rank)
    sources = []
    for candidate in [chosen, *others]:
        convert = claim.previous.convert(candidate.name)
        if convert is None or convert.output("tflite_float32") is None:
            continue
        info = convert.info_as(ConvertInfo)
        source = {
            "input": f"tflite_{candidate.name}",
            "candidate": candidate.name,
            "passed": candidate.deliverable,
            "input_transposes": info.input_transposes,
        }
        if info.prebuilt_errors:
            source["prebuilt_errors"] = dict(info.prebuilt_errors)
        if info.prebuilt_versions:
            source["prebuilt_versions"] = dict(info.prebuilt_versions)
        sources.append(source)
    return sources


@contextmanager
def heartbeat(ctx: WorkerContext, job_id: str, stage: str) -> Iterator[None]:
    """Check in for as long as this worker holds the stage, file transfers included (the
    runner's own check-ins stop between processes): a silent heartbeat means a lost worker."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(5.0):
            try:
                _check_in(ctx, job_id, stage)
            except Exception:  # noqa: BLE001 - a missed beat is not the stage's failure
                log.warning("job.stage.heartbeat_failed", job_id=job_id, stage=stage)

    thread = threading.Thread(target=beat, name=f"heartbeat-{stage}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _check_in(ctx: WorkerContext, job_id: str, stage: str) -> bool:
    """Heartbeat of a running stage; True when its job was cancelled (stop the stage)."""
    with session_scope(ctx.sessions) as session:
        session.execute(
            update(StageRun)
            .where(StageRun.job_id == job_id, StageRun.name == stage, StageRun.state == StageState.RUNNING)
            .values(heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        job = session.get(Job, job_id)
        return job is None or job.status == JobStatus.CANCELLED
