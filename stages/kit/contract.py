"""The JSON contract between a worker and a stage process.

The worker writes a request file and runs::

    <toolchain-env>/bin/python -m stages <stage-name> <request.json> <result.json>

Request (JSON object)::

    {"stage": "export.prepare",
     "inputs": {"model": "/abs/path/model.bin", ...},   # local files, by logical name
     "spec": {...},                                       # the normalized job spec (PlanSpec.to_json())
     "options": {...},                                    # operator settings (allow-list, ...)
     "output_dir": "/abs/path/out"}                       # where the stage writes files

Result (JSON object), written by the stage process before it exits::

    {"ok": true,
     "outputs": {"onnx": "model.onnx", ...},   # files in output_dir, by logical name
     "metrics": {...},                          # JSON-able numbers for the report
     "info": {...}}                             # anything else worth recording

or, for an error the user can act on::

    {"ok": false, "error": {"code": "export_failed", "message": "..."}}

A stage reads ``spec`` as a ``stages.kit.spec.PlanSpec`` (``StageRequest.spec``) and
``options`` into its role's dataclass (``stages.kit.options``); the JSON stays as it was.

Exit codes: 0 with ``ok: true``; ``EXIT_STAGE_ERROR`` with ``ok: false``; anything
else (a signal, an uncaught exception without a result file) is a crash, which the
worker reports as ``stage_crashed`` with the tail of the stage's log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.kit.codes import StageCode
from stages.kit.spec import PlanSpec

EXIT_STAGE_ERROR = 3
# The most elements one input's validation sample may have: the control plane refuses
# larger spec shapes at submission (app/schemas/spec.py, the same number); a stage refuses
# a larger shape a model declares itself before it allocates anything for it.
MAX_INPUT_ELEMENTS = 256 * 1024 * 1024


class StageError(Exception):
    """An error with a stable code and a message that tells the user what to do."""

    def __init__(self, code: StageCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class StageRequest:
    """A request file, read: ``spec`` typed (``PlanSpec``), ``options`` as the worker wrote
    them (each stage role reads them into its own options dataclass)."""

    stage: str
    inputs: dict[str, str]
    spec: PlanSpec
    options: dict[str, Any]
    output_dir: Path

    @classmethod
    def read(cls, path: Path) -> StageRequest:
        """The request at ``path``; ``invalid_spec`` for a spec that is not a job spec's shape."""
        raw = json.loads(path.read_text())
        try:
            spec = PlanSpec.from_json(raw["spec"] or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise StageError(
                StageCode.INVALID_SPEC, f"the request's spec cannot be read: {type(exc).__name__}: {exc}"
            ) from None
        return cls(
            stage=raw["stage"],
            inputs=dict(raw["inputs"]),
            spec=spec,
            options=dict(raw["options"]),
            output_dir=Path(raw["output_dir"]),
        )

    def optional_input(self, name: str) -> Path | None:
        """The local path of input ``name``, None when the job has none (uploaded samples)."""
        return Path(self.inputs[name]) if name in self.inputs else None

    def input_path(self, name: str) -> Path:
        try:
            return Path(self.inputs[name])
        except KeyError:
            raise StageError(StageCode.STAGE_INPUT_MISSING, f"stage input {name!r} was not provided") from None


@dataclass
class StageResult:
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "outputs": self.outputs, "metrics": self.metrics, "info": self.info}


def error_json(error: StageError) -> dict[str, Any]:
    return {"ok": False, "error": {"code": error.code, "message": error.message}}


def refuse_huge_inputs(inputs: list[dict[str, Any]]) -> None:
    """``input_too_large`` for an input whose sample would exceed ``MAX_INPUT_ELEMENTS``.

    An input is ``{"name", "shape", "sample_shape"?}``; named dimensions count as 1 unless
    the stage derived a ``sample_shape``.
    """
    for item in inputs:
        shape = item.get("sample_shape") or item.get("shape") or []
        elements = 1
        for dim in shape:
            elements *= dim if isinstance(dim, int) and dim > 0 else 1
        if elements > MAX_INPUT_ELEMENTS:
            count = str(elements) if elements < 10**20 else "more than 10^20"
            raise StageError(
                StageCode.INPUT_TOO_LARGE,
                f"input {item.get('name')!r} declares the shape {list(item.get('shape') or [])}, "
                f"{count} elements per sample; the limit is {MAX_INPUT_ELEMENTS} (every input is sampled to "
                "validate the conversion). Export the model with realistic sizes, or a dynamic (named) "
                "dimension where the size varies",
            )
