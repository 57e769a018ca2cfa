"""The client commands of ``modelport``: each takes the parsed arguments, a Client and the two consoles
(``out`` for results: tables, JSON; ``err`` for progress and messages) and returns the exit status."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from modelport._transport import downloadable
from modelport.cli import render
from modelport.cli.spec import build_spec, check_spec
from modelport.client import Client, Job
from modelport.errors import NotFound
from modelport.schemas.job import JobOut, StageOut

OK, FAILED = 0, 1
FINAL_STAGE_STATES = ("succeeded", "failed", "cancelled")


def _bytes_progress(err: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def follow(job: Job, err: Console, timeout: float | None, poll_interval: float = 1.0) -> JobOut:
    """Wait for the job with a spinner naming its status and current stage; a line per stage as it ends."""
    announced: set[str] = set()

    with err.status(f"job {job.id}: {job.status}") as spinner:

        def show(info: JobOut) -> None:
            for stage in info.stages:
                if stage.state in FINAL_STAGE_STATES and stage.name not in announced:
                    announced.add(stage.name)
                    err.print(follow_line(stage), highlight=False)
            current = f", stage {info.stage}" if info.stage else ""
            spinner.update(f"job {info.id}: {info.status}{current}")

        return job.wait(timeout=timeout, on_progress=show, poll_interval=poll_interval)


def follow_line(stage: StageOut) -> str:
    """A stage's line as ``follow`` prints it when the stage ends: state, name, seconds, and its error."""
    seconds = f"{stage.seconds:.1f} s" if stage.seconds is not None else ""
    why = f"  {stage.error.code}: {escape(stage.error.message)}" if stage.error else ""
    style = render.STATUS_STYLE.get(stage.state, "")
    return f"  [{style}]{stage.state:>9}[/]  {stage.name:<28} {seconds:>9}{why}"


def describe_failure(info: JobOut, err: Console) -> None:
    """The job's final error: its code and where, the message unless a stage line above already gave it
    (``follow``'s lines and ``stages_table`` print each failed stage's message), and the stage log's last
    lines without the ones that repeat that message (a stage logs the error it reports)."""
    if info.error is None:
        err.print(f"[bold red]job {info.id} {info.status}[/]")
        return
    message = info.error.message.strip()
    where = f" in {info.error.stage}" if info.error.stage else ""
    shown = any(
        stage.name == info.error.stage and stage.error is not None and stage.error.message.strip() == message
        for stage in info.stages
    )
    told = f" (above: {info.error.stage})" if shown else f": {escape(message)}"
    err.print(f"[bold red]job {info.id} {info.status}{where}: {info.error.code}[/]{told}")
    if info.error.log_tail:
        tail = [line for line in info.error.log_tail.splitlines() if not message or message not in line]
        if tail:
            err.print("[dim]" + escape("\n".join(tail[-15:])) + "[/]", highlight=False)
    if info.error.stage:
        err.print(f"full log: modelport logs {info.id} {info.error.stage}")


def fetch_results(job: Job, directory: Path, err: Console, names: list[str] | None = None) -> dict[str, Any] | None:
    """Download the job's artifacts (sha256 checked) and its report into ``directory``; the report, or
    None when the job ended without one."""
    artifacts = downloadable(job.artifacts(), names)
    if artifacts:
        with _bytes_progress(err) as progress:
            tasks = {a.name: progress.add_task(f"download {a.name}", total=a.size) for a in artifacts}
            job.download(
                directory,
                names=[a.name for a in artifacts],
                on_progress=lambda name, written, _size: progress.update(tasks[name], completed=written),
            )
    try:
        report = job.report_json()
    except NotFound as error:  # report_not_produced: the job ended before its report stage
        err.print(f"no report: {escape(error.detail)}")
        return None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    written = [a.name for a in artifacts] + ["report.json"]
    err.print(f"wrote to {directory}/: {', '.join(written)}")
    return report


def show_report(report: dict[str, Any], out: Console) -> int:
    """The report's table and notes; FAILED when its verdict is fail or an artifact missed its tolerance."""
    out.print(render.report_table(report))
    for note in render.report_notes(report):
        out.print(note, soft_wrap=True)
    return FAILED if report.get("verdict") == "fail" or render.missed(report) else OK


def cmd_convert(args: argparse.Namespace, client: Client, out: Console, err: Console) -> int:
    spec = build_spec(args)
    check_spec(spec)
    model = Path(args.model)
    directory = Path(args.out) if args.out else Path(f"{model.stem}-modelport")
    for given in (model, args.calibration, args.samples):
        if given is not None and not Path(given).is_file():
            raise FileNotFoundError(f"no such file: {given}")  # before a progress bar is drawn
    with _bytes_progress(err) as progress:
        task = progress.add_task(f"upload {model.name}", total=None)
        job = client.submit(
            model,
            spec,
            calibration=args.calibration,
            inputs=args.samples,
            idempotency_key=args.idempotency_key,
            on_upload=lambda sent, total: progress.update(task, completed=sent, total=total),
        )
    err.print(f"job {job.id} {job.status}  (modelport status {job.id})")
    try:
        final = follow(job, err, args.timeout, args.poll_interval)
    except KeyboardInterrupt:
        err.print(f"\nstopped waiting; the job goes on: modelport status {job.id} / modelport cancel {job.id}")
        return 130
    if final.status != "succeeded":
        describe_failure(final, err)
    else:
        took = (final.finished_at - final.created_at).total_seconds() if final.finished_at else None
        err.print(f"[green]job {final.id} succeeded[/]" + (f" in {took:.0f} s" if took is not None else ""))
    if final.status == "cancelled":
        return FAILED
    report = fetch_results(job, directory, err)
    if report is None:
        return FAILED
    status = show_report(report, out)
    return FAILED if final.status != "succeeded" else status


def cmd_jobs(args: argparse.Namespace, client: Client, out: Console, err: Console) -> int:
    jobs = client.jobs(status=args.status, limit=args.limit)
    if args.json:
        out.print_json(json.dumps([j.info.model_dump(mode="json") for j in jobs]))
    else:
        out.print(render.jobs_table(j.info for j in jobs))
    return OK


def cmd_status(args: argparse.Namespace, client: Client, out: Console, err: Console) -> int:
    job = client.job(args.job)
    if args.wait:
        follow(job, err, args.timeout, args.poll_interval)
    if args.json:
        out.print_json(job.info.model_dump_json())
    else:
        out.print(render.stages_table(job.info))
        if job.info.error:
            describe_failure(job.info, err)
    return FAILED if args.wait and job.info.status != "succeeded" else OK


def cmd_report(args: argparse.Namespace, client: Client, out: Console, err: Console) -> int:
    report = client.job(args.job).report_json()
    if args.json:
        out.print_json(json.dumps(report))
        return OK
    return show_report(report, out)


def cmd_download(args: argparse.Namespace, client: Client, out: Console, err: Console) -> int:
    job = client.job(args.job)
    directory = Path(args.out) if args.out else Path(job.id)
    report = fetch_results(job, directory, err, names=args.names or None)
    return OK if report is not None or job.status == "succeeded" else FAILED


def cmd_cancel(args: argparse.Namespace, client: Client, out: Console, err: Console) -> int:
    info = client.job(args.job).cancel()
    err.print(f"job {info.id}: {info.status}")
    return OK


def cmd_logs(args: argparse.Namespace, client: Client, out: Console, err: Console) -> int:
    out.file.write(client.job(args.job).log(args.stage))
    return OK


def cmd_toolchains(args: argparse.Namespace, client: Client, out: Console, err: Console) -> int:
    toolchains = client.toolchains()
    if args.json:
        out.print_json(json.dumps([t.model_dump(mode="json") for t in toolchains]))
    else:
        out.print(render.toolchains_table(toolchains))
    return OK
