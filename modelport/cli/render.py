"""rich renderings of the API's resources for the ``modelport`` command: the report as a table per
artifact, jobs, a job's stages, toolchains. Pure functions of the JSON/schemas; no network."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from modelport.schemas.job import JobOut, ToolchainOut

VERDICT_STYLE = {"pass": "green", "degraded": "yellow", "fail": "bold red"}
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "blue",
    "pending": "dim",
    "skipped": "dim",
}
# The packages worth a column in `modelport toolchains` (each lock pins ~100).
KEY_PACKAGES = (
    "torch",
    "torchvision",
    "onnx",
    "onnxruntime",
    "tensorflow-cpu",
    "tensorflow",
    "onnx-tf",
    "onnx2tf",
    "litert-torch",
    "ai-edge-litert",
    "ai-edge-quantizer",
)
MISSING = "–"


def size(n: int | None) -> str:
    """Bytes for people: 1.2 MB, 830 kB, 512 B (powers of 1000, as file managers show)."""
    if n is None:
        return MISSING
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return MISSING  # unreachable


def number(value: float | None, fmt: str = ".3g") -> str:
    return MISSING if value is None else format(value, fmt)


def styled(word: str | None, styles: dict[str, str]) -> Text:
    return Text(word or MISSING, style=styles.get(word or "", ""))


def _worst(outputs: dict[str, dict[str, Any]], key: str, pick: Any = max) -> float | None:
    values = [o[key] for o in outputs.values() if isinstance(o, dict) and o.get(key) is not None]
    return pick(values) if values else None


def artifact_row(entry: dict[str, Any]) -> list[str | Text]:
    """One report artifact as table cells; over several outputs the worst of each metric is shown."""
    outputs: dict[str, dict[str, Any]] = entry.get("outputs") or {}
    ratios = [
        o["max_abs"] / o["scale"]
        for o in outputs.values()
        if isinstance(o, dict) and o.get("max_abs") is not None and o.get("scale")
    ]
    top1 = entry.get("top1_agreement")
    if top1 is None:
        top1 = _worst(outputs, "top1_agreement", min)
    cosine = entry.get("min_cosine")
    if cosine is None:
        cosine = _worst(outputs, "cosine", min)
    latency = (entry.get("latency_ms") or {}).get("median_1_thread")
    return [
        entry.get("name", "?"),
        entry.get("toolchain") or MISSING,
        size(entry.get("size")),
        number(_worst(outputs, "max_abs")),
        number(max(ratios) if ratios else None),
        number(_worst(outputs, "mean_abs")),
        number(cosine, ".5g"),
        number(top1, ".0%"),
        number(latency, ".2f"),
        styled(entry.get("verdict"), VERDICT_STYLE),
    ]


REPORT_COLUMNS = (
    "artifact",
    "toolchain",
    "size",
    "max abs",
    "max/scale",
    "mean abs",
    "cosine",
    "top-1",
    "latency ms",
    "verdict",
)


def report_table(report: dict[str, Any]) -> Table:
    """Per artifact (its name says its precision): toolchain, size, max and mean absolute error against
    the reference, the max error over the output's scale (what the float32 tolerance judges), the min
    cosine similarity, top-1 agreement, median invoke latency on one thread in ms (.tflite), verdict.
    Over several outputs each cell is the worst output's."""
    artifacts = report.get("artifacts") or []
    table = Table(title=f"report: {report.get('verdict', '?')}", title_justify="left")
    longest = max((len(str(e.get("name", ""))) for e in artifacts), default=8)
    for header in REPORT_COLUMNS:
        left = header in ("artifact", "toolchain", "verdict")
        table.add_column(
            header,
            justify="left" if left else "right",
            no_wrap=True,
            min_width=longest if header == "artifact" else None,
        )
    for entry in artifacts:
        table.add_row(*artifact_row(entry))
    return table


def report_notes(report: dict[str, Any]) -> list[Text]:
    """What the table does not say: why an artifact missed, precisions not produced, the job's reasons."""
    notes: list[Text] = []
    for entry in report.get("artifacts") or []:
        if entry.get("verdict") != "pass":
            for reason in entry.get("reasons") or []:
                notes.append(Text(f"{entry.get('name')}: {reason}", style=VERDICT_STYLE.get(entry.get("verdict"), "")))
        for warning in entry.get("warnings") or []:
            notes.append(Text(f"{entry.get('name')}: {warning}", style="yellow"))
    for precision, state in (report.get("precisions") or {}).items():
        if isinstance(state, dict) and state.get("status") == "not_produced":
            notes.append(
                Text(f"{precision}: not produced ({state.get('code')}): {state.get('reason')}", style="yellow")
            )
    if report.get("verdict") != "pass":
        said = {note.plain for note in notes}
        # A job's reason is often an artifact's, already said above.
        notes.extend(Text(f"job: {r}", style="red") for r in report.get("reasons") or [] if r not in said)
    return notes


def missed(report: dict[str, Any]) -> list[str]:
    """What the user asked for and did not get: the artifacts whose verdict is ``fail`` (each
    missed its tolerance or could not be run), then each requested precision that was not
    produced (``"int8 (not produced)"``; the job itself fails for that only with ``strict``)."""
    failed = [e.get("name", "?") for e in report.get("artifacts") or [] if e.get("verdict") == "fail"]
    precisions = report.get("precisions") or {}
    absent = [f"{name} (not produced)" for name, state in precisions.items() if state.get("status") == "not_produced"]
    return failed + absent


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else MISSING


def jobs_table(jobs: Iterable[JobOut]) -> Table:
    table = Table(title="jobs, newest first", title_justify="left")
    for header in ("id", "status", "stage", "model", "created", "error"):
        table.add_column(header, no_wrap=header != "error")
    for job in jobs:
        table.add_row(
            job.id,
            styled(job.status, STATUS_STYLE),
            job.stage or MISSING,
            str(job.model.get("filename") or MISSING),
            _when(job.created_at),
            f"{job.error.code}: {job.error.message}" if job.error else "",
        )
    return table


def stages_table(job: JobOut) -> Table:
    title = f"job {job.id}: {job.status}" + (f" (stage {job.stage})" if job.stage else "")
    table = Table(title=title, title_justify="left")
    for header in ("stage", "toolchain", "state", "seconds", "note"):
        table.add_column(header, no_wrap=header != "note", justify="right" if header == "seconds" else "left")
    for stage in job.stages:
        if stage.error:
            note = f"{stage.error.code}: {stage.error.message}"
        else:
            note = stage.skipped_reason or ""
        table.add_row(
            stage.name,
            stage.toolchain,
            styled(stage.state, STATUS_STYLE),
            number(stage.seconds, ".1f"),
            note,
        )
    return table


def toolchains_table(toolchains: Iterable[ToolchainOut]) -> Table:
    table = Table(title="toolchains", title_justify="left")
    for header in ("name", "ready", "converters (enabled)", "python", "packages"):
        table.add_column(header, no_wrap=header in ("name", "ready"))
    for toolchain in toolchains:
        converters = ", ".join(f"{c}{'' if c in toolchain.enabled else ' (off)'}" for c in toolchain.converters)
        packages = ", ".join(f"{p} {toolchain.packages[p]}" for p in KEY_PACKAGES if p in toolchain.packages)
        table.add_row(
            toolchain.name,
            styled("yes" if toolchain.ready else "no", {"yes": "green", "no": "red"}),
            converters or MISSING,
            toolchain.python,
            packages,
        )
    return table
