"""One step of a job: claim a stage, run it, record the outcome, hand over to the next.

Plain functions: the Celery task only calls ``run_stage``. Job state lives in the
database, and every step checks it first, so a redelivered task never runs a finished
stage twice and never revives a finished job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.orm import Session

from domain.db import session_scope
from domain.jobs import names
from domain.jobs.plan import CONTROL, Plan, StageDef
from domain.jobs.records import Records
from domain.jobs.report import finish_job
from domain.jobs.selection import auto_satisfied, choose, saved_model_satisfied, tflite_failure
from domain.jobs.states import FINAL, STAGE_OVER, WAITING, JobStatus, StageState
from domain.models import Job, StageRun
from domain.models.base import as_utc, utcnow
from stages.kit.codes import StageCode
from stages.kit.results import ExportInfo, RunNote, StageOutcome
from worker.context import WorkerContext
from worker.execute import Claim, execute, heartbeat
from worker.runner import StageCancelled, StageFailure

log = structlog.get_logger()

TOLERANT_ROLES = frozenset({"convert", "validate", "quantize"})  # failures the report lists
MAX_ATTEMPTS = 2  # a stage whose worker died this many times fails the job as worker_lost


def _stage_run(job: Job, name: str) -> StageRun | None:
    return next((s for s in job.stages if s.name == name), None)


def fail_job(job: Job, run: StageRun | None, code: str, message: str, tail: str = "") -> None:
    now = utcnow()
    job.status, job.finished_at = JobStatus.FAILED, now
    job.error_code, job.error_message, job.error_stage = code, message, run.name if run else job.stage
    job.error_log_tail = tail[-8000:] if tail else None
    if run is not None:
        run.state, run.finished_at = StageState.FAILED, now
        run.error_code, run.error_message = code, message
    for other in job.stages:
        if other.state in WAITING:
            other.state = StageState.SKIPPED


def lock_job(session: Session, job_id: str) -> Job | None:
    """Load the job holding its row's write lock until the transaction ends.

    Under ``best`` stages of one job finish at the same time on different workers; each
    must see the others' outcomes when it decides what runs next. A no-op UPDATE takes
    the row lock on PostgreSQL and SQLite's write lock before anything is read.
    """
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(updated_at=Job.updated_at)
        .execution_options(synchronize_session=False)
    )
    return session.get(Job, job_id, populate_existing=True)


def claim(ctx: WorkerContext, job_id: str, stage: str) -> Claim | list[StageDef] | None:
    """Mark the stage running. Returns None when there is nothing to do, or the stages
    to send when this one already finished (a redelivery after a crash between
    recording and enqueueing)."""
    with session_scope(ctx.sessions) as session:
        job = lock_job(session, job_id)
        if job is None or job.status in FINAL:
            log.info("job.stage.skipped", job_id=job_id, stage=stage, reason="missing or finished")
            return None
        run = _stage_run(job, stage)
        if run is None:
            return None
        plan = Plan.of(job.spec)
        definition = plan.stage(stage)
        if run.state in STAGE_OVER:
            # What this stage released may never have reached the broker: send every
            # queued stage again (a claim ignores a copy of a stage that runs or ran).
            advance(session, ctx, job, plan)
            return [plan.stage(s.name) for s in job.stages if s.state == StageState.QUEUED]
        if not _ready(job, plan, stage):
            # A stray copy of a stage not yet released (its inputs are not there yet).
            log.info("job.stage.early", job_id=job_id, stage=stage)
            return None
        if run.state == StageState.RUNNING and _alive(run, ctx.settings.queue.heartbeat_stale):
            # A duplicate message while the stage runs elsewhere: not a redelivery.
            log.info("job.stage.duplicate", job_id=job_id, stage=stage)
            return None
        if run.attempts >= MAX_ATTEMPTS:
            fail_job(
                job,
                run,
                StageCode.WORKER_LOST,
                f"the worker running stage {stage!r} was lost {run.attempts} times; the job was stopped "
                "so it is not retried forever. Resubmit it; if it happens again the model may exhaust "
                "the worker's memory.",
            )
            return None
        now = utcnow()
        # Optimistic claim: of two workers holding copies of this message, one wins.
        claimed = session.execute(
            update(StageRun)
            .where(StageRun.id == run.id, StageRun.state == run.state, StageRun.attempts == run.attempts)
            .values(state=StageState.RUNNING, attempts=run.attempts + 1, started_at=now, heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        session.refresh(run)
        job.status, job.stage = JobStatus.RUNNING, stage
        job.started_at = job.started_at or now
        previous = Records.of_runs(job.stages)
        return Claim(definition, plan, job.model_key, job.inputs_key, job.calibration_key, previous)


def run_stage(ctx: WorkerContext, job_id: str, stage: str, request_id: str | None = None) -> None:
    # The task binds job_id, stage and request_id into structlog's contextvars; binding them
    # here too keeps the lines right when run_stage is called without the task (tests).
    bound = log.bind(job_id=job_id, stage=stage, request_id=request_id)
    claimed = claim(ctx, job_id, stage)
    if claimed is None:
        return
    if isinstance(claimed, list):
        for definition in claimed:
            ctx.enqueue(job_id, definition.name, definition.toolchain, request_id=request_id)
        return
    bound.info("job.stage.started")
    started = time.monotonic()
    failure: StageFailure | None = None
    result: StageOutcome | None = None  # a control stage records nothing of its own
    try:
        if claimed.definition.toolchain != CONTROL:
            with heartbeat(ctx, job_id, stage):
                result = execute(ctx, job_id, claimed)
    except StageCancelled:
        bound.info("job.stage.cancelled")
        return
    except StageFailure as exc:
        bound.warning("job.stage.failed", code=exc.code, error=exc.message)
        failure = exc
    seconds = round(time.monotonic() - started, 3)
    following = record_outcome(ctx, job_id, claimed.definition, result, seconds, failure)
    bound.info("job.stage.finished", seconds=seconds, ok=failure is None)
    for definition in following:
        ctx.enqueue(job_id, definition.name, definition.toolchain, request_id=request_id)


def record_outcome(
    ctx: WorkerContext,
    job_id: str,
    definition: StageDef,
    result: StageOutcome | Mapping[str, Any] | None,
    seconds: float,
    failure: StageFailure | None,
) -> list[StageDef]:
    """Record the stage's end and return the stages it released (none: the job ended or
    waits for another stage). ``result`` is the stage's outcome, or its JSON (stored as given)."""
    recorded = result.to_json() if isinstance(result, StageOutcome) else dict(result or {})
    with session_scope(ctx.sessions) as session:
        job = lock_job(session, job_id)
        if job is None or job.status in FINAL:
            return []
        run = _stage_run(job, definition.name)
        assert run is not None
        run.seconds, run.finished_at = seconds, utcnow()
        if failure is None:
            run.state, run.result = StageState.SUCCEEDED, recorded
            run.log_key = StageOutcome.from_json(recorded).log_key or run.log_key
        else:
            run.log_key = f"jobs/{job_id}/logs/{definition.name}.log" if failure.log_tail else None
            note = RunNote(peak_rss_bytes=failure.peak_rss_bytes, process_seconds=failure.process_seconds)
            if definition.role not in TOLERANT_ROLES:
                run.result = note.to_json()  # the log's tail is the job's error
                fail_job(job, run, failure.code, failure.message, failure.log_tail)
                return []
            # One candidate failing is a finding for the report, not the job's end.
            run.state, run.error_code, run.error_message = StageState.FAILED, failure.code, failure.message
            run.result = replace(note, log_tail=failure.log_tail[-4000:]).to_json()
        session.flush()
        return advance(session, ctx, job)


def _ready(job: Job, plan: Plan, stage: str) -> bool:
    """Every stage ``stage`` waits for is over (a stage the job lacks counts as over)."""
    states = {s.name: s.state for s in job.stages}
    return all(states[name] in STAGE_OVER for name in plan.dependencies(stage) if name in states)


def _skip_reason(job: Job, plan: Plan, definition: StageDef, records: Records) -> str | None:
    # The most telling reason first: auto's choice, then what the file allows, then a
    # conversion that produced nothing to validate.
    spec = plan.spec
    candidate = definition.candidate or ""
    if names.is_validate_flex(definition.name):
        stock = records.stage(names.validate(candidate))
        check = stock.check("tflite_float32") if stock is not None else None
        if stock is not None and not (check is not None and check.requires_flex):
            return "builtin ops only: stock LiteRT validated it"
        if stock is not None and not auto_satisfied(spec, records):
            return None  # needs flex ops: TensorFlow's interpreter validates it
    if definition.role == "convert" and candidate not in plan.candidates and saved_model_satisfied(spec, records):
        return "auto: an earlier SavedModel candidate already passed"
    if definition.role in ("convert", "validate") and auto_satisfied(spec, records):
        # A SavedModel candidate still converts while no SavedModel has passed.
        wants_saved_model = candidate in plan.saved_model_candidates and not saved_model_satisfied(spec, records)
        if not (definition.role == "convert" and wants_saved_model):
            return "auto: an earlier candidate already passed with builtin ops only"
    export = records.export.info_as(ExportInfo)
    if definition.candidate == "onnx-tf" and export.onnx_tf_compatible is False:
        return f"onnx-tf cannot read this ONNX file: {export.onnx_tf_reason}"
    if definition.role == "validate":
        convert = _stage_run(job, names.convert(candidate))
        if convert is None or convert.state != StageState.SUCCEEDED:
            return "its conversion did not produce a .tflite"
        converted = records.convert(candidate)
        if converted is not None and converted.output("tflite_float32") is None:
            why = tflite_failure(converted)
            return "its conversion did not produce a .tflite" + (f": {why}" if why else "")
        if names.is_validate_flex(definition.name):
            return "its .tflite was not validated in stock LiteRT"
    if definition.role == "quantize" and choose(spec, records) is None:
        return "no float32 .tflite passed validation to quantize"
    return None


def advance(session: Session, ctx: WorkerContext, job: Job, plan: Plan | None = None) -> list[StageDef]:
    """Release every pending stage whose dependencies are over (skipping those that need
    not run), marking them queued; finish the job when every stage is over."""
    plan = plan or Plan.of(job.spec)
    records = Records.of_runs(job.stages)
    released: list[StageDef] = []
    # Plan order: a stage's dependencies come before it, so a skip here can release a
    # later stage in the same pass.
    for definition in plan.stages:
        run = _stage_run(job, definition.name)
        if run is None or run.state != StageState.PENDING or not _ready(job, plan, definition.name):
            continue
        reason = _skip_reason(job, plan, definition, records)
        if reason is None:
            run.state = StageState.QUEUED
            released.append(definition)
        else:
            run.state, run.result = StageState.SKIPPED, RunNote(skipped_reason=reason).to_json()
    session.flush()
    if all(s.state in STAGE_OVER for s in job.stages):
        finish_job(session, ctx.store, job)
    return released


def _alive(run: StageRun, stale: timedelta) -> bool:
    return run.heartbeat_at is not None and utcnow() - as_utc(run.heartbeat_at) < stale
