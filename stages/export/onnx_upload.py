"""``export.prepare`` for an uploaded ONNX file: no PyTorch, onnxruntime is the reference.

1. Read and check: an empty file is ``empty_model``; a file protobuf or
   ``onnx.checker`` refuses is ``invalid_model``; external data (any tensor whose bytes
   live in another file) is ``onnx_external_data``, before anything could follow its path.
2. Inputs: the spec's, which must match the graph's inputs (``input_mismatch`` lists
   them), or the graph's own; one too large to sample is ``input_too_large``. Integer
   inputs get synthetic ids below the vocabulary of the Gather table they feed.
3. Reference: onnxruntime on the uploaded model as it is, on the samples and at a second
   size of every named dimension (``stages.kit.probes``, stored in ``reference.npz`` as
   for PyTorch uploads; ``info.probes`` gives the sizes, or why there is none: no named
   dimension, or the graph fixes one the spec names).
4. The output file: outputs renamed to plain identifiers only where needed
   (``output_name_map``); when a consumer reads older opsets (onnx-tf: 15), converted
   with ``onnx.version_converter`` and kept only if onnxruntime agrees with the
   reference; if that fails, the original is kept with ``onnx_tf_compatible: false``
   when another consumer reads it (else ``opset_not_supported``).
5. ``metrics.onnx`` compares the output file with the reference, always (an unchanged
   file matches exactly, which the report then shows).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stages.export.onnx_export import OPSET_LIMITS, choose_opset, may_keep_higher_opset, onnx_consumers, onnx_io
from stages.export.onnx_file import (
    conversion_info,
    convert_opset,
    file_opset,
    input_dims,
    onnx_tf_fields,
    run_samples,
    session,
)
from stages.export.onnx_file import validate as validate_onnx
from stages.export.onnx_graph import (
    check_spec_inputs,
    describe,
    fixed_named_dims,
    gather_tables,
    graph_inputs,
    parameter_count,
    refuse_external_data,
    stable_output_names,
)
from stages.export.outputs import reference_shapes
from stages.export.tokens import integer_inputs, with_ranges
from stages.kit import samples as sample_io
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult, refuse_huge_inputs
from stages.kit.failures import first_line
from stages.kit.options import OperatorOptions, read_options
from stages.kit.probes import to_arrays as probe_arrays
from stages.kit.spec import PlanSpec
from stages.kit.versions import versions


def prepare_onnx(request: StageRequest) -> StageResult:
    import onnx

    spec = request.spec
    threads = int(read_options(OperatorOptions, request.options).threads or 1)
    uploaded = request.optional_input("samples")

    started = time.monotonic()
    model = _read(request.input_path("model"))
    source_opset = file_opset(model)
    assert source_opset is not None  # the checker requires the default domain
    target = _target_opset(spec, source_opset)
    inputs, inputs_source = _inputs(spec, model)
    refuse_huge_inputs(inputs)
    load_seconds = time.monotonic() - started

    ranges: dict[str, dict[str, Any]] = {}
    if not uploaded:
        tables = gather_tables(model, integer_inputs(inputs))
        inputs, ranges = with_ranges(inputs, tables, None)
    samples = sample_io.build(inputs, spec, uploaded)
    input_names = [item["name"] for item in inputs]

    started = time.monotonic()
    try:
        reference_session = session(model.SerializeToString(), threads)
    except Exception as exc:
        raise StageError(
            StageCode.INVALID_MODEL,
            f"onnxruntime, the reference runtime for ONNX uploads, cannot load the model: {first_line(exc)}. "
            "Check that it uses only standard ONNX operators",
        ) from None
    try:
        raw = run_samples(reference_session, samples)
    except Exception as exc:
        given = ", ".join(f"{n} {list(samples[n].shape[1:])} {samples[n].dtype}" for n in input_names)
        raise StageError(
            StageCode.INPUT_MISMATCH,
            f"onnxruntime could not run the model on the inputs ({given}): {first_line(exc)}. "
            f"The graph's inputs: {describe(graph_inputs(model))}",
        ) from None
    reference_seconds = time.monotonic() - started

    started = time.monotonic()
    renamed = stable_output_names(model)
    output_names = [o.name for o in model.graph.output]
    reference = {name: raw[renamed.get(name, name)] for name in output_names}
    out = request.output_dir
    sample_io.save(out / "samples.npz", samples)
    # Every named dimension at a second size too, in onnxruntime: validate.tflite and the SavedModel check run them.
    probe_sets, probe_info = _probe_references(
        reference_session, samples, inputs, output_names, renamed, graph_inputs(model), inputs_source
    )
    sample_io.save(out / "reference.npz", {**reference, **probe_arrays(probe_sets)})
    source_file = out / "model.source.onnx"
    onnx.save(model, str(source_file))

    tolerance = spec.tolerance["float32"]

    def validate(path: Path) -> dict[str, Any]:
        return validate_onnx(path, samples, reference, tolerance, threads)

    attempts = []
    conversion: dict[str, Any] | None = None
    reason: str | None = None
    opset = source_opset
    metrics: dict[str, Any] | None = None
    if target != source_opset:
        step = convert_opset(source_file, out / "model.onnx", target, validate)
        attempts.append(step.to_json())
        conversion = conversion_info(source_opset, target, step)
        if step.ok:
            opset, metrics = target, step.metrics
            source_file.unlink()
        elif spec.opset is None and may_keep_higher_opset(spec):
            reason = step.error
        else:
            raise StageError(
                StageCode.OPSET_NOT_SUPPORTED,
                f"the ONNX file has opset {source_opset}; {_readers(spec, target)} and converting it to "
                f"{target} failed: {step.error}. Upload the model exported at opset {target}, or choose a "
                "toolchain that reads its opset (onnx2tf)",
            )
    if metrics is None:
        source_file.replace(out / "model.onnx")
        try:
            metrics = validate(out / "model.onnx")
        except Exception as exc:  # cannot happen for the file the reference ran, but say so if it does
            raise StageError(
                StageCode.INVALID_MODEL, f"onnxruntime cannot run the prepared file: {first_line(exc)}"
            ) from None
    export_seconds = time.monotonic() - started
    onnx_inputs, output_shapes = onnx_io(out / "model.onnx")

    return StageResult(
        outputs={"onnx": "model.onnx", "samples": "samples.npz", "reference": "reference.npz"},
        metrics={"onnx": metrics},
        info={
            "model_format": "onnx",
            "input_names": input_names,
            "inputs": sample_io.public_inputs(inputs),
            "inputs_source": inputs_source,
            "onnx_input_names": onnx_inputs,
            "onnx_input_shapes": input_dims(out / "model.onnx"),
            "output_names": output_names,
            "output_name_map": renamed,
            "output_shapes": reference_shapes(reference, output_names, output_shapes, inputs),
            "exporter": "uploaded",
            "opset": opset,
            "source_opset": source_opset,
            "opset_conversion": conversion,
            **onnx_tf_fields(opset, reason),
            "versions": versions("onnx", "onnxruntime", "numpy"),
            "reference_runtime": "onnxruntime",
            "parameters": parameter_count(model),
            "export_attempts": attempts,
            "output_shapes_probed": False,
            "probes": probe_info,
            **sample_io.run_info(
                samples,
                uploaded=bool(uploaded),
                ranges=ranges,
                seed=spec.seed,
                threads=threads,
                seconds={"load": load_seconds, "reference": reference_seconds, "export_and_validate": export_seconds},
            ),
        },
    )


def _probe_references(
    reference_session: Any,
    samples: dict[str, Any],
    inputs: list[dict[str, Any]],
    output_names: list[str],
    renamed: dict[str, str],
    graph: list[dict[str, Any]],
    inputs_source: str,
) -> tuple[list[Any], dict[str, Any]]:
    """onnxruntime's reference at a second size of every named dimension
    (``stages.kit.probes.build``): the probe sets and ``info.probes``."""
    from stages.kit import probes

    fixed = fixed_named_dims(inputs, graph)
    if fixed:
        base = probes.base_sizes(samples, inputs)
        why = f"the uploaded ONNX graph fixes {', '.join(fixed)}: it runs at that size only"
        return [], {"sizes": [base], "reason": why}

    def run(feed: dict[str, Any]) -> dict[str, Any]:
        raw = run_samples(reference_session, feed)
        return {name: raw[renamed.get(name, name)] for name in output_names}

    unnamed = "no named dynamic dimension"
    if inputs_source == "graph":
        unnamed += ": every input of the ONNX graph has fixed sizes (export it with dynamic axes to have them probed)"
    return probes.build(samples, inputs, output_names, run, "onnxruntime on the uploaded file", unnamed)


def _read(path: Path) -> Any:
    import onnx

    data = path.read_bytes()
    if not data:
        raise StageError(StageCode.EMPTY_MODEL, "the model file is empty (0 bytes): upload the whole .onnx file")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, or a file too large for protobuf
        raise StageError(
            StageCode.INVALID_MODEL,
            f"not an ONNX model: the file does not parse as an ONNX ModelProto ({first_line(exc, 200)}). "
            "Upload the .onnx file written by torch.onnx.export or onnx.save",
        ) from None
    refuse_external_data(model)
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        raise StageError(
            StageCode.INVALID_MODEL,
            f"onnx.checker rejects the ONNX file: {first_line(exc, 300)}. Re-export the model, "
            "or check it with onnx.checker.check_model",
        ) from None
    if file_opset(model) is None:
        raise StageError(StageCode.INVALID_MODEL, "the ONNX file imports no default-domain opset (ai.onnx)")
    return model


def _target_opset(spec: PlanSpec, source: int) -> int:
    """The file's own opset, unless asked for another or a consumer reads less."""
    if spec.opset is not None:
        return choose_opset(spec)  # checks the value against the consumers' limits
    limits = [OPSET_LIMITS[c] for c in onnx_consumers(spec) if c in OPSET_LIMITS]
    return min([source, *limits])


def _readers(spec: PlanSpec, target: int) -> str:
    limited = [c for c in onnx_consumers(spec) if c in OPSET_LIMITS]
    if spec.opset is not None:
        return f"spec.opset asks for {target}"
    return f"{', '.join(limited)} read(s) opsets up to {target}"


def _inputs(spec: PlanSpec, model: Any) -> tuple[list[dict[str, Any]], str]:
    graph = graph_inputs(model)
    if spec.inputs:
        given = sample_io.input_specs(spec)
        initializers = {init.name for init in model.graph.initializer}
        optional = {value.name for value in model.graph.input if value.name in initializers}
        check_spec_inputs(given, graph, optional)
        return given, "spec"
    unknown = [item["name"] for item in graph if item["shape"] is None]
    if unknown:
        raise StageError(
            StageCode.INPUTS_REQUIRED,
            f"the ONNX graph does not declare the rank of its inputs {unknown}: give spec.inputs "
            "(names, shapes, dtypes)",
        )
    return graph, "graph"
