"""ONNX export of a TorchScript upload: its loaded graph first, then the graph converted to FX.

A TorchScript archive keeps code, not shapes: once ``torch.jit.load`` has read it, every
tensor inside the graph is an unshaped ``Tensor``. The legacy (TorchScript-based) exporter
needs ranks where its symbolic functions decide by them, and a traced torchvision ViT
fails there (torch 2.14.1): "ONNX export of transpose for tensor of unknown rank", inside
``multi_head_attention_forward`` (``unflatten`` -> ``unsqueeze`` -> ``transpose``).
Neither ``_jit_pass_complete_shape_analysis`` nor ``_jit_pass_propagate_shapes_on_graph``
fixes that: both stop at ``aten::unflatten`` and leave 27 values of a tiny ViT unranked.

What works is to rebuild the program: ``torch._export.converter`` (the graph converter
behind ``TS2EPConverter``) turns the loaded graph into an FX ``GraphModule`` of aten ops,
which the dynamo exporter traces with real shapes and the spec's dynamic dimensions.
(``TS2EPConverter.convert()`` itself re-exports that graph with every dimension
``Dim.AUTO``, which specializes a size-1 batch or, at size 2, makes batch 1 invalid; the
legacy exporter on the FX graph bakes its integer sizes in; both were tried.) So, in this
order (``info.torchscript_route.used`` names the one that gave the file):

1. ``loaded_graph``: the spec's exporters on the loaded module (the default);
2. ``converted_graph`` (``exporter: auto`` only): the dynamo exporter on the converted
   graph at opset 18 or the consumers' opset if higher; when a consumer reads less
   (onnx-tf: 15), ``onnx.version_converter`` with the decompositions of
   ``stages.export.onnx_file.convert_opset``, kept if onnxruntime still agrees; else the
   opset-18 file for the consumers that read it (``onnx_tf_compatible: false``).

Each attempt in ``export_attempts`` (and so in the report) carries its ``route``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.export.onnx_export import (
    DEFAULT_OPSET,
    Exported,
    ExportFailed,
    export_best,
    may_keep_higher_opset,
    onnx_consumers,
)
from stages.export.onnx_file import conversion_info, convert_opset
from stages.export.outputs import flat_module
from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.failures import first_line
from stages.kit.spec import PlanSpec

LOADED_GRAPH = "loaded_graph"
CONVERTED_GRAPH = "converted_graph"
CONVERTER = "torch._export.converter.TS2FXGraphConverter"


@dataclass
class ScriptExport:
    """What the export of a TorchScript upload needs from ``export.prepare``."""

    spec: PlanSpec
    exporters: tuple[str, ...]
    example: tuple[Any, ...]  # one sample per input, torch tensors in the signature's order
    inputs: list[dict[str, Any]]  # the signature: named dimensions are dynamic
    output_names: list[str]
    out: Path
    opset: int  # the consumers' opset
    declared: dict[str, list[int | str]] | None
    validate: Callable[[Path], dict[str, Any]]


def export_torchscript_upload(
    job: ScriptExport, module: Any, default: Callable[[Any], Exported]
) -> tuple[Exported, dict[str, Any]]:
    """The ONNX file of a loaded TorchScript ``module`` and ``info.torchscript_route``.

    ``default(wrapper)`` is ``export.prepare``'s export-and-validate at the consumers'
    opset on a flat-output wrapper. Raises ``ExportFailed`` (``export_failed``) with both
    routes' errors when neither works, ``StageError`` (``opset_not_supported``) when the
    converted graph exports only above the opset every consumer reads.
    """
    try:
        exported = default(flat_module(module).eval())
    except ExportFailed as failed:
        first = failed
    else:
        _tag(exported.attempts, LOADED_GRAPH)
        return exported, {"used": LOADED_GRAPH, "tried": [LOADED_GRAPH]}
    _tag(first.attempts, LOADED_GRAPH)
    if job.spec.exporter == "torchscript":
        raise ExportFailed(
            f"{first.message}. With exporter 'auto', the dynamo exporter would also try the TorchScript "
            "graph converted to an FX graph",
            first.attempts,
        )
    try:
        graph = convert_graph(module, job.example)
    except Exception as exc:  # the converter's errors are many and untyped
        raise ExportFailed(
            f"{first.message}. Converting the TorchScript graph to an FX graph ({CONVERTER}) failed too: "
            f"{first_line(exc, 300)}. Upload a state dict or an ExportedProgram (torch.export.save) instead",
            first.attempts,
        ) from None
    exported = _export_converted(job, graph, first)
    route = {
        "used": CONVERTED_GRAPH,
        "tried": [LOADED_GRAPH, CONVERTED_GRAPH],
        "converter": CONVERTER,
        "loaded_graph_error": "; ".join(f"{a.exporter}: {a.error}" for a in first.attempts if a.error),
    }
    return exported, route


def convert_graph(module: Any, example: tuple[Any, ...]) -> Any:
    """A loaded ScriptModule as an FX ``GraphModule`` of aten ops, called like the module.

    The first half of ``TS2EPConverter.convert()`` (torch 2.14): its re-export with
    ``Dim.AUTO`` everywhere is left out, so no dimension is specialized here.
    """
    from torch._export.converter import (
        TS2EPConverter,
        TS2FXGraphConverter,
        get_block_to_lifted_attrs,
        replace_quantized_ops_with_standard_ops,
    )

    converter = TS2EPConverter(module, example)
    blocks, attribute_fqns = get_block_to_lifted_attrs(converter.ts_graph)
    graph = TS2FXGraphConverter(
        converter.ts_graph,
        converter.name_to_param,
        converter.name_to_buffer,
        blocks,
        converter.name_to_non_tensor_attributes,
        converter.name_to_constant,
        attribute_fqns,
    ).convert()
    replace_quantized_ops_with_standard_ops(graph)
    return graph.eval()


def _export_converted(job: ScriptExport, graph: Any, first: ExportFailed) -> Exported:
    names = [item["name"] for item in job.inputs]
    dynamic = {item["name"]: sample_io.dynamic_axes(item["shape"]) for item in job.inputs}
    native = max(job.opset, DEFAULT_OPSET)
    wrapper = flat_module(graph).eval()
    try:
        exporter, metrics, attempts = export_best(
            ("dynamo",),
            wrapper,
            job.example,
            job.out,
            names,
            job.output_names,
            dynamic,
            native,
            job.declared,
            job.validate,
        )
    except ExportFailed as failed:
        _tag(failed.attempts, CONVERTED_GRAPH)
        raise ExportFailed(
            f"{first.message}. On the graph converted to FX: {failed.message}", [*first.attempts, *failed.attempts]
        ) from None
    attempts = [*first.attempts, *attempts]
    if native == job.opset or metrics["verdict"] != "pass":
        _tag(attempts, CONVERTED_GRAPH)
        return Exported(exporter, metrics, attempts, native)
    chosen = job.out / "model.onnx"
    converted = job.out / "model.converted.onnx"
    step = convert_opset(chosen, converted, job.opset, job.validate)
    attempts.append(step)
    _tag(attempts, CONVERTED_GRAPH)
    conversion = conversion_info(native, job.opset, step)
    if step.ok:
        converted.replace(chosen)
        return Exported(exporter, step.metrics or {}, attempts, job.opset, conversion=conversion)
    if may_keep_higher_opset(job.spec):
        reason = f"the converted TorchScript graph exports at opset {native} only ({step.error})"
        return Exported(exporter, metrics, attempts, native, conversion=conversion, onnx_tf_reason=reason)
    chosen.unlink(missing_ok=True)
    raise StageError(
        StageCode.OPSET_NOT_SUPPORTED,
        f"the TorchScript graph exports only through the dynamo exporter, at opset {native}, but "
        f"{', '.join(onnx_consumers(job.spec))} read(s) opsets up to {job.opset} and the conversion "
        f"failed: {step.error}. Choose a toolchain that reads opset {native} (onnx2tf), or upload a state dict",
    )


def _tag(attempts: list[Any], route: str) -> None:
    for attempt in attempts:
        if attempt.route is None:
            attempt.route = route
