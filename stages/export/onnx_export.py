"""PyTorch -> ONNX export with the legacy (TorchScript) and dynamo exporters.

Behaviour verified with torch 2.14.1 (see the docstrings of the constants):

- ``torch.onnx.export(..., dynamo=False)`` still works (with a deprecation warning),
  honours any ``opset_version`` from 7 up, and turns ``dynamic_axes`` of the inputs
  into named dimensions that it propagates to the outputs.
- ``dynamo=True`` translates at opset 18 or newer. Asked for less, it tries a
  version conversion and, when that fails (it does for resnet18 at 12-17), quietly
  keeps opset 18. The produced file's opset is therefore checked here, and a file
  that does not have the requested opset is a failed attempt, not a success.
- onnx-tf 1.10 reads opsets up to 15, and attention (scaled_dot_product_attention)
  exports at 14 or newer, hence 15 as the default for that toolchain.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.failures import first_line
from stages.kit.spec import PlanSpec

# The highest opset the downstream toolchain reads; None means no limit.
OPSET_LIMITS: dict[str, int] = {"onnx-tf": 15}
DEFAULT_OPSETS: dict[str, int] = {"onnx-tf": 15}
# 18 is the lowest opset the dynamo exporter produces natively; the legacy exporter,
# onnxruntime and newer converters all read it.
DEFAULT_OPSET = 18
EXPORTER_ORDER: dict[str, tuple[str, ...]] = {
    "auto": ("torchscript", "dynamo"),
    "torchscript": ("torchscript",),
    "dynamo": ("dynamo",),
}


@dataclass
class Attempt:
    exporter: str
    ok: bool
    error: str | None = None
    opset: int | None = None
    metrics: dict[str, Any] | None = field(default=None, repr=False)  # onnxruntime's, when validated
    route: str | None = None  # a TorchScript upload's: what was exported (stages.export.script_program)
    decomposed: list[str] = field(default_factory=list)  # operators rewritten before a version conversion

    def to_json(self) -> dict[str, Any]:
        found = {"exporter": self.exporter, "ok": self.ok, "error": self.error, "opset": self.opset}
        return {**found, **{k: v for k, v in (("route", self.route), ("decomposed", self.decomposed)) if v}}


def choose_opset(spec: PlanSpec) -> int:
    """The opset every converter that reads the file can take (``onnx_consumers``, set by
    the worker from the job's plan; else the spec's toolchain)."""
    consumers = onnx_consumers(spec)
    limits = [OPSET_LIMITS[c] for c in consumers if c in OPSET_LIMITS]
    toolchain = min(consumers, key=lambda c: OPSET_LIMITS.get(c, 10**6))
    requested = spec.opset
    limit = min(limits) if limits else None
    if requested is None:
        return min([DEFAULT_OPSETS.get(c, DEFAULT_OPSET) for c in consumers])
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 7:
        raise StageError(StageCode.INVALID_SPEC, f"opset must be an integer >= 7 (or null), got {requested!r}")
    if limit is not None and requested > limit:
        raise StageError(
            StageCode.OPSET_NOT_SUPPORTED,
            f"toolchain {toolchain!r} reads ONNX opsets up to "
            f"{limit}; asked for {requested}. Use opset {limit} or leave it null",
        )
    return requested


def onnx_consumers(spec: PlanSpec) -> list[str]:
    return list(spec.onnx_consumers or [spec.toolchain])


def may_keep_higher_opset(spec: PlanSpec) -> bool:
    """Whether a file above the limit of some consumer (onnx-tf) is still worth keeping.

    True when the opset was not asked for explicitly and another consumer reads any
    opset (onnx2tf): the worker then skips onnx-tf for this job (``onnx_tf_compatible``
    false) instead of the whole job failing. False when every consumer needs the
    lower opset: then not reaching it is the job's error.
    """
    if spec.opset is not None:
        return False
    return any(c not in OPSET_LIMITS for c in onnx_consumers(spec))


def exporter_order(spec: PlanSpec) -> tuple[str, ...]:
    exporter = spec.exporter
    try:
        return EXPORTER_ORDER[exporter]
    except KeyError:
        raise StageError(
            StageCode.INVALID_SPEC, f"exporter must be one of {sorted(EXPORTER_ORDER)}, got {exporter!r}"
        ) from None


def export(
    exporter: str,
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> Attempt:
    """One export attempt; a failure is recorded, not raised, so the next can run."""
    if path.exists():
        path.unlink()
    try:
        with warnings.catch_warnings():
            # The legacy exporter warns on every call that it is deprecated.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*feature will be removed.*")
            if exporter == "torchscript":
                _export_torchscript(module, example, path, input_names, output_names, dynamic, opset)
            else:
                _export_dynamo(module, example, path, input_names, output_names, dynamic, opset)
    except Exception as exc:  # exporter errors are many and untyped
        return Attempt(exporter, False, first_line(exc))
    return _check_file(exporter, path, opset, input_names, output_names)


def _export_torchscript(
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> None:
    import torch

    from stages.export.symbolics import register

    register()
    if not isinstance(module, torch.jit.ScriptModule) and any(
        isinstance(inner, torch.jit.ScriptModule) for inner in module.modules()
    ):
        # A TorchScript upload inside the flat wrapper: the exporter's own tracer refuses
        # calls into a scripted submodule ("not part of the active trace"); torch.jit.trace
        # records them, and the exporter takes the traced module as it is.
        module = torch.jit.trace(module, example, check_trace=False, strict=False)
    torch.onnx.export(
        module,
        example,
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes={name: axes for name, axes in dynamic.items() if axes} or None,
        do_constant_folding=True,
    )


def _export_dynamo(
    module: Any,
    example: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
) -> None:
    import torch

    dims: dict[str, Any] = {}

    def dim(name: str) -> Any:
        # One Dim object per name, so inputs sharing "batch" share the constraint.
        if name not in dims:
            dims[name] = torch.export.Dim(re.sub(r"\W", "_", name) or "dim")
        return dims[name]

    shapes = None
    if any(dynamic.values()):
        # The stages' wrapper takes *args: one tuple entry for the varargs.
        shapes = (tuple({axis: dim(n) for axis, n in dynamic.get(name, {}).items()} or None for name in input_names),)
    torch.onnx.export(
        module,
        example,
        str(path),
        dynamo=True,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=shapes,
        external_data=False,
        report=False,
        verbose=False,
    )


def export_program(
    program: Any,
    example: tuple[Any, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    opset: int,
) -> Attempt:
    """The dynamo exporter on an ExportedProgram as it is (its own dynamic dimensions)."""
    from torch.utils import _pytree as pytree

    if path.exists():
        path.unlink()
    try:
        import torch

        args, kwargs = pytree.tree_unflatten(list(example), program.call_spec.in_spec)
        torch.onnx.export(
            program,
            tuple(args),
            str(path),
            kwargs=dict(kwargs) or None,
            dynamo=True,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            external_data=False,
            report=False,
            verbose=False,
        )
    except Exception as exc:  # exporter errors are many and untyped
        return Attempt("dynamo", False, first_line(exc))
    return _check_file("dynamo", path, opset, input_names, output_names)


def _check_file(exporter: str, path: Path, opset: int, input_names: list[str], output_names: list[str]) -> Attempt:
    import onnx

    if not path.is_file():
        return Attempt(exporter, False, "the exporter wrote no file")
    try:
        onnx.checker.check_model(str(path), full_check=False)
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        return Attempt(exporter, False, f"onnx.checker rejected the file: {first_line(exc)}")
    produced = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if produced != opset:
        return Attempt(
            exporter,
            False,
            f"produced opset {produced}, not the requested {opset}: its version conversion failed",
            produced,
        )
    got_outputs = [o.name for o in model.graph.output]
    if got_outputs != output_names:
        return Attempt(
            exporter,
            False,
            f"the file's outputs {got_outputs} differ from the model's flattened outputs {output_names}",
            produced,
        )
    return Attempt(exporter, True, None, produced)


def declare_output_shapes(path: Path, declared: dict[str, list[int | str]]) -> None:
    """Write the measured output shapes (static sizes, named dynamic ones) into the file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for output in model.graph.output:
        dims = declared.get(output.name)
        shape = output.type.tensor_type.shape
        if dims is None or len(shape.dim) not in (0, len(dims)):
            continue
        del shape.dim[:]
        for value in dims:
            dim = shape.dim.add()
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = value
    # Weights stay where the exporter put them (inline, or external beside the file).
    onnx.save(model, str(path))


def onnx_io(path: Path) -> tuple[list[str], dict[str, list[int | str | None]]]:
    """Graph input names (unused inputs may have been pruned) and output shapes."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    shapes: dict[str, list[int | str | None]] = {}
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        shapes[output.name] = [d.dim_value if d.dim_value > 0 else (d.dim_param or None) for d in dims]
    return inputs, shapes


class Exported:
    """The chosen ONNX file's provenance and metrics."""

    def __init__(
        self,
        exporter: str,
        metrics: dict[str, Any],
        attempts: list[Attempt],
        opset: int,
        conversion: dict[str, Any] | None = None,
        onnx_tf_reason: str | None = None,
    ) -> None:
        self.exporter, self.metrics, self.attempts, self.opset = exporter, metrics, attempts, opset
        self.conversion, self.onnx_tf_reason = conversion, onnx_tf_reason


class ExportFailed(StageError):
    def __init__(self, message: str, attempts: list[Attempt]) -> None:
        super().__init__(StageCode.EXPORT_FAILED, message)
        self.attempts = attempts


def validate_attempt(
    attempt: Attempt,
    path: Path,
    declared: dict[str, list[int | str]] | None,
    validate: Callable[[Path], dict[str, Any]],
) -> dict[str, Any] | None:
    """``validate(path)``'s metrics (with their ``seconds``), the output shapes declared first.

    None when onnxruntime refuses the file: the attempt then failed and the file is
    removed. A file that runs but disagrees with PyTorch stays ``ok``, with the reasons
    in ``attempt.error``.
    """
    if declared:
        declare_output_shapes(path, declared)
    started = time.monotonic()
    try:
        metrics = validate(path)
    except Exception as exc:  # a file onnxruntime refuses is a failed attempt
        attempt.ok, attempt.error = False, f"onnxruntime could not run the file: {first_line(exc)}"
        path.unlink(missing_ok=True)
        return None
    metrics["seconds"] = round(time.monotonic() - started, 3)
    if metrics["verdict"] != "pass":
        attempt.error = "exported, but onnxruntime disagrees with PyTorch: " + "; ".join(metrics["reasons"])
    return metrics


def export_best(
    exporters: tuple[str, ...],
    wrapper: Any,
    example: tuple[Any, ...],
    out: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int,
    declared: dict[str, list[int | str]] | None,
    validate: Callable[[Path], dict[str, Any]],
) -> tuple[str, dict[str, Any], list[Attempt]]:
    """Try the exporters in order; keep the first file onnxruntime agrees with.

    A file that exports but disagrees with PyTorch does not stop ``auto``: the next
    exporter may do better. If none passes, the first runnable file is kept with its
    failing metrics, so the report shows what went wrong.
    """
    attempts: list[Attempt] = []
    chosen: tuple[str, dict[str, Any]] | None = None
    for exporter in exporters:
        candidate = out / f"model.{exporter}.onnx"
        attempt = export(exporter, wrapper, example, candidate, input_names, output_names, dynamic, opset)
        attempts.append(attempt)
        metrics = validate_attempt(attempt, candidate, declared, validate) if attempt.ok else None
        if metrics is None:
            continue
        if chosen is None or metrics["verdict"] == "pass":
            candidate.replace(out / "model.onnx")
            chosen = (exporter, metrics)
        if metrics["verdict"] == "pass":
            break
    for exporter in exporters:
        (out / f"model.{exporter}.onnx").unlink(missing_ok=True)
    if chosen is None:
        tried = "; ".join(f"{a.exporter}: {a.error}" for a in attempts)
        raise ExportFailed(
            f"ONNX export failed at opset {opset}. {tried}. Try another exporter or opset in the "
            "spec, or change the model to avoid the unsupported operation",
            attempts,
        )
    return chosen[0], chosen[1], attempts
