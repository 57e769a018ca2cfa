"""The boundary of a quantized .tflite: each input's and output's dtype and quantization.

A full-integer file made with ``int8_io`` takes and returns int8 tensors. Users feed it
``q = clip(round(x / scale) + zero_point, -128, 127)`` and read ``x = (q - zero_point) *
scale``, with the scale and zero point of each port; ``describe`` reads them from the
flatbuffer (``ai_edge_litert.schema_py_generated``, no interpreter, so a file that
crashes the runtime is still described) and ``int8_io_gaps`` says which float ports of
the float32 file did not become int8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.kit.tflite_boundary import Boundary, Port, read

FEEDING = (
    "int8 ports: feed q = clip(round(x / scale) + zero_point, -128, 127) as int8; read x = (q - zero_point) * scale"
)


def describe(path: Path) -> dict[str, Any]:
    """``{signature_key, inputs, outputs, boundary[, feeding]}``; ports keyed by signature key."""
    from ai_edge_litert import schema_py_generated as schema

    boundary = read(path)
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    subgraph = model.Subgraphs(boundary.subgraph)

    def port(item: Port) -> dict[str, Any]:
        entry: dict[str, Any] = {"shape": item.shape, "dtype": item.dtype}
        quantization = _quantization(subgraph.Tensors(item.tensor))
        if quantization is not None:
            entry["quantization"] = quantization
        return entry

    inputs = {item.key: port(item) for item in boundary.inputs}
    outputs = {item.key: port(item) for item in boundary.outputs}
    quantized = [entry for entry in [*inputs.values(), *outputs.values()] if "quantization" in entry]
    described: dict[str, Any] = {
        "signature_key": boundary.signature_key,
        "inputs": inputs,
        "outputs": outputs,
        "boundary": "int8" if quantized else "float",
    }
    if quantized:
        described["feeding"] = FEEDING
    return described


def int8_io_gaps(float_boundary: Boundary, described: dict[str, Any]) -> list[str]:
    """The float ports of the float32 file that are not quantized int8 in ``described``."""
    gaps: list[str] = []
    for kind, ports in (("input", float_boundary.inputs), ("output", float_boundary.outputs)):
        entries = described[f"{kind}s"]
        for item in ports:
            if not item.dtype.startswith("float"):
                continue  # token ids and masks keep their integer type
            entry = entries.get(item.key)
            if entry is None or entry["dtype"] != "int8" or "quantization" not in entry:
                dtype = entry["dtype"] if entry else "missing"
                gaps.append(f"int8_io: {kind} {item.key!r} stays {dtype}: the quantizer left it unquantized")
    return gaps


def _quantization(tensor: Any) -> dict[str, Any] | None:
    """Scale and zero point of an integer tensor (lists when per channel), else None."""
    params = tensor.Quantization()
    if params is None or not params.ScaleLength():
        return None
    scales = [float(value) for value in params.ScaleAsNumpy()]
    zeros = [int(value) for value in params.ZeroPointAsNumpy()] if params.ZeroPointLength() else [0] * len(scales)
    if len(scales) == 1:
        return {"scale": scales[0], "zero_point": zeros[0]}
    return {"scale": scales, "zero_point": zeros, "axis": int(params.QuantizedDimension())}
