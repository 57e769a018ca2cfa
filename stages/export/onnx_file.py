"""The ONNX file every format ends with: run it, compare it, convert its opset.

No PyTorch here (an uploaded ONNX file is prepared without it): onnx and
onnxruntime are imported inside the functions.

Opset conversion (``onnx.version_converter``) serves the converters that read old
opsets only (onnx-tf reads up to 15): the dynamo exporter writes opset 18 and an
upload may be newer still. The converter has no adapter for operators that did not
exist at the target opset (LayerNormalization, new in 17, cannot go to 15): those with
a definition in older operators are decomposed first (``stages.export.onnx_decompose``),
others make the conversion fail. A converted file is kept only when onnxruntime agrees
with the reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.export.onnx_export import Attempt
from stages.kit.failures import first_line

ONNX_TF_MAX_OPSET = 15


def file_opset(model: Any) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def session(source: Path | bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    target = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(target, options, providers=["CPUExecutionProvider"])


def run_samples(sess: Any, samples: dict[str, Any]) -> dict[str, Any]:
    """Every output of the session on every sample, stacked: name -> ``[N, ...]``."""
    import numpy as np

    feed_names = [i.name for i in sess.get_inputs()]
    output_names = [o.name for o in sess.get_outputs()]
    count = next(iter(samples.values())).shape[0]
    collected: dict[str, list[Any]] = {name: [] for name in output_names}
    for index in range(count):
        feed = {name: samples[name][index] for name in feed_names}
        for name, value in zip(output_names, sess.run(output_names, feed), strict=True):
            collected[name].append(value)
    return {name: np.stack(values) for name, values in collected.items()}


def validate(
    path: Path, samples: dict[str, Any], reference: dict[str, Any], tolerance: float, threads: int
) -> dict[str, Any]:
    """Metrics of the file in onnxruntime against the reference (raises if it cannot run)."""
    from stages.kit.metrics import compare

    return compare(reference, run_samples(session(path, threads), samples), tolerance)


def convert_opset(source: Path, target: Path, opset: int, validate_file: Callable[[Path], dict[str, Any]]) -> Attempt:
    """Convert ``source`` to ``opset`` into ``target``; ok only if onnxruntime still agrees.

    Operators the converter cannot take below the opset that introduced them
    (LayerNormalization, Gelu) are first rewritten as older ones
    (``stages.export.onnx_decompose``); ``attempt.decomposed`` lists them.
    """
    import onnx
    from onnx import version_converter

    from stages.export.onnx_decompose import decompose

    started = time.monotonic()
    target.unlink(missing_ok=True)
    decomposed: list[str] = []
    try:
        model = onnx.load(str(source), load_external_data=False)
        _drop_default_reduce_flags(model.graph)
        _bypass_identities(model.graph)
        decomposed = decompose(model, opset)
        converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted, full_check=False)
        onnx.save(converted, str(target))
    except Exception as exc:  # the converter raises bare RuntimeErrors for missing adapters
        error = f"onnx.version_converter failed: {_converter_error(exc)}"
        return Attempt("version_converter", False, error, opset, decomposed=decomposed)
    try:
        metrics = validate_file(target)
    except Exception as exc:
        target.unlink(missing_ok=True)
        error = f"onnxruntime cannot run the converted file: {first_line(exc)}"
        return Attempt("version_converter", False, error, opset, decomposed=decomposed)
    if metrics["verdict"] != "pass":
        target.unlink(missing_ok=True)
        error = "the converted file disagrees with the reference: " + "; ".join(metrics["reasons"])
        return Attempt("version_converter", False, error, opset, decomposed=decomposed)
    attempt = Attempt("version_converter", True, None, opset, decomposed=decomposed)
    attempt.metrics = {**metrics, "seconds": round(time.monotonic() - started, 3)}
    return attempt


def conversion_info(source: int, target: int, step: Attempt) -> dict[str, Any]:
    """``info.opset_conversion``: from, to, tool, ok, error, and the operators decomposed (if any)."""
    info = {"from": source, "to": target, "tool": "onnx.version_converter", "ok": step.ok, "error": step.error}
    return {**info, "decomposed": step.decomposed} if step.decomposed else info


def _drop_default_reduce_flags(graph: Any) -> None:
    # The dynamo exporter spells out ReduceMean's noop_with_empty_axes=0 (the default),
    # and the converter's Reduce adapters reject that attribute below opset 18.
    for node in graph.node:
        if node.op_type.startswith("Reduce"):
            kept = [a for a in node.attribute if not (a.name == "noop_with_empty_axes" and a.i == 0)]
            if len(kept) != len(node.attribute):
                del node.attribute[:]
                node.attribute.extend(kept)


def _bypass_identities(graph: Any) -> None:
    """Remove top-level Identity nodes, which the converter cannot take below opset 16
    (it has no Identity adapter from 16 to 15).

    An Identity feeding other nodes is bypassed (they read its input); one that names a
    graph output gives that name to the node producing its input instead. One whose
    input is a graph input, an initializer or another output stays, and the converter
    says so. The caller validates the converted file against the reference.
    """
    outputs = {o.name for o in graph.output}
    fixed = {i.name for i in graph.input} | {init.name for init in graph.initializer} | outputs
    producers = {name: node for node in graph.node for name in node.output}
    rename: dict[str, str] = {}
    dropped = []
    for node in graph.node:
        if node.op_type != "Identity" or len(node.input) != 1 or len(node.output) != 1:
            continue
        source, target = _follow(rename, node.input[0]), node.output[0]
        if target not in outputs:
            rename[target] = source
        elif source not in fixed and source in producers:
            rename[source] = target  # its producer now writes the output itself
            producer = producers[source]
            producer.output[list(producer.output).index(source)] = target
            producers[target] = producer
        else:
            continue
        dropped.append(node)
    if not dropped:
        return
    for node in dropped:
        graph.node.remove(node)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in rename:
                node.input[index] = _follow(rename, name)
    stale = [info for info in graph.value_info if info.name in rename]
    for info in stale:
        graph.value_info.remove(info)


def _follow(rename: dict[str, str], name: str) -> str:
    seen = set()
    while name in rename and name not in seen:
        seen.add(name)
        name = rename[name]
    return name


def _converter_error(exc: BaseException) -> str:
    # "/project/onnx/version_converter/adapters/no_previous_version.h:23: adapt: Assertion
    # `false` failed: No Previous Version of LayerNormalization exists" -> the last part.
    text = first_line(exc)
    return text.split("failed: ", 1)[-1] if "Assertion" in text else text


def rename_dims(path: Path, names: dict[str, str]) -> None:
    """Rename symbolic dimensions (``s72`` -> ``batch``) everywhere in the file's signatures."""
    import onnx

    if not names:
        return
    model = onnx.load(str(path), load_external_data=False)
    infos = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for info in infos:
        for dim in info.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    onnx.save(model, str(path))


def input_dims(path: Path) -> dict[str, list[int | str | None]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    return {
        i.name: [d.dim_value if d.dim_value > 0 else (d.dim_param or None) for d in i.type.tensor_type.shape.dim]
        for i in model.graph.input
        if i.name not in initializers
    }


def onnx_tf_fields(opset: int, reason: str | None = None) -> dict[str, Any]:
    """``onnx_tf_compatible``/``onnx_tf_reason``: whether onnx-tf can read the file's opset."""
    if opset <= ONNX_TF_MAX_OPSET:
        return {"onnx_tf_compatible": True, "onnx_tf_reason": None}
    why = f"the ONNX file has opset {opset} and onnx-tf reads opsets up to {ONNX_TF_MAX_OPSET}"
    return {"onnx_tf_compatible": False, "onnx_tf_reason": f"{why}: {reason}" if reason else why}
