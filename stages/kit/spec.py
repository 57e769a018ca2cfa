"""The normalized job spec as every process reads it: frozen stdlib dataclasses.

The API validates a user's ``JobSpec`` (``modelport/schemas/spec.py``, pydantic), normalizes
it once (``app.services.jobs.check_spec``) into a ``PlanSpec`` and stores
``PlanSpec.to_json()``; the worker and the stage processes read it back with
``PlanSpec.from_json`` and use attributes from then on. Stdlib only, so the stage package
stays framework-free in every toolchain environment.

``to_json`` is byte-compatible with the dict the API stored before this type existed
(same keys, same order), so stored jobs, the stage request files and the job resource's
``spec`` do not change. ``from_json`` fills a key that an older stored spec lacks with
the same default ``JobSpec`` gives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stages.kit.fields import nested, read_fields

# The default relative tolerances per precision (a fraction of the output's scale, see
# docs/report.md); the API's JobSpec and the validators read these.
DEFAULT_TOLERANCE: dict[str, float] = {"float32": 1e-4, "float16": 1e-2}
DEFAULT_TARGETS: tuple[str, ...] = ("onnx", "saved_model", "tflite")
DEFAULT_PRECISIONS: tuple[str, ...] = ("float32",)


@dataclass(frozen=True)
class ArchitectureSpec:
    """An allow-listed constructor: ``name`` is a dotted path, ``kwargs`` its keyword arguments,
    ``config`` an optional config object's fields (Hugging Face style)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ArchitectureSpec:
        return read_fields(cls, raw, kwargs=dict(nested(raw, "kwargs") or {}))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": self.kwargs, "config": self.config}


@dataclass(frozen=True)
class InputDecl:
    """One model input as the user declared it.

    ``shape`` holds positive ints and named (dynamic) dimensions such as ``"batch"``;
    ``dtype`` is a NumPy dtype name; ``range`` is the ``(low, high)`` of synthetic samples.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    range: tuple[float, float] | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> InputDecl:
        bounds = nested(raw, "range")
        return read_fields(
            cls,
            raw,
            shape=tuple(nested(raw, "shape") or ()),
            range=(float(bounds[0]), float(bounds[1])) if bounds is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "range": list(self.range) if self.range is not None else None,
        }


@dataclass(frozen=True)
class PlanSpec:
    """A job spec after the API's checks: ``model_format`` is never ``"auto"``, ``tolerance``
    has every precision's effective value and ``available_toolchains`` lists the converters
    this server had enabled when the job was accepted (its plan only uses those)."""

    model_format: str = "state_dict"
    architecture: ArchitectureSpec | None = None
    inputs: tuple[InputDecl, ...] = ()
    opset: int | None = None
    exporter: str = "auto"
    toolchain: str = "auto"
    targets: tuple[str, ...] = DEFAULT_TARGETS
    quantization: tuple[str, ...] = DEFAULT_PRECISIONS
    int8_io: bool = False
    layout: str = "nchw"
    tolerance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    validation_samples: int = 8
    seed: int = 0
    strict: bool = False
    callback_url: str | None = None
    available_toolchains: tuple[str, ...] | None = None
    # Set by the worker in export.prepare's request only: the converters of the job's plan
    # that read the exported ONNX file (the opset must suit all of them).
    onnx_consumers: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PlanSpec:
        """Read a stored or requested spec; a key it lacks (or holds null) takes ``JobSpec``'s default."""
        architecture, opset = nested(raw, "architecture"), nested(raw, "opset")
        available, consumers = nested(raw, "available_toolchains"), nested(raw, "onnx_consumers")
        return read_fields(
            cls,
            raw,
            architecture=ArchitectureSpec.from_json(architecture) if architecture else None,
            inputs=tuple(InputDecl.from_json(item) for item in nested(raw, "inputs") or ()),
            opset=int(opset) if opset is not None else None,
            targets=tuple(nested(raw, "targets") or DEFAULT_TARGETS),
            quantization=tuple(nested(raw, "quantization") or DEFAULT_PRECISIONS),
            int8_io=bool(nested(raw, "int8_io")),
            tolerance={**DEFAULT_TOLERANCE, **(nested(raw, "tolerance") or {})},
            validation_samples=int(nested(raw, "validation_samples") or 8),
            seed=int(nested(raw, "seed") or 0),
            strict=bool(nested(raw, "strict")),
            available_toolchains=tuple(available) if available is not None else None,
            onnx_consumers=tuple(str(c) for c in consumers) if consumers is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form: the same keys, in the same order, as before this type existed."""
        raw: dict[str, Any] = {
            "model_format": self.model_format,
            "architecture": self.architecture.to_json() if self.architecture else None,
            "inputs": [item.to_json() for item in self.inputs],
            "opset": self.opset,
            "exporter": self.exporter,
            "toolchain": self.toolchain,
            "targets": list(self.targets),
            "quantization": list(self.quantization),
            "int8_io": self.int8_io,
            "layout": self.layout,
            "tolerance": dict(self.tolerance),
            "validation_samples": self.validation_samples,
            "seed": self.seed,
            "strict": self.strict,
            "callback_url": self.callback_url,
        }
        if self.available_toolchains is not None:
            raw["available_toolchains"] = list(self.available_toolchains)
        if self.onnx_consumers is not None:
            raw["onnx_consumers"] = list(self.onnx_consumers)
        return raw

    @property
    def quantized(self) -> tuple[str, ...]:
        """The requested precisions other than float32, in the user's order."""
        return tuple(p for p in self.quantization if p != "float32")

    def tolerance_for(self, precision: str) -> float | None:
        """The relative tolerance for ``precision`` (a fraction of the output's scale), if any."""
        return self.tolerance.get(precision)
