"""A .tflite file's boundary - its signature's inputs and outputs - read and rewritten.

A converter may leave a tensor at the boundary in another layout than the one the
contract promises (onnx2tf, for one, decides per model whether a 4-D output leaves
channel-last), or under a sanitized name. ``rewrite`` fixes that inside the file:
it adds a TRANSPOSE between the public tensor and the internal one, and renames
signature keys and boundary tensors. Nothing else in the graph changes.

The file is edited with the flatbuffer object API of LiteRT's schema
(``ai_edge_litert.schema_py_generated``), so this works without TensorFlow. It needs
numpy and flatbuffers, imported inside the functions; files whose weights live
outside the flatbuffer (buffer offsets, used past 2 GB) are refused.

Permutations follow ``numpy.transpose``. For an input, ``internal = transpose(public,
perm)``; for an output, ``public = transpose(internal, perm)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_IDENTIFIER = b"TFL3"


@dataclass
class Port:
    key: str  # the signature key (what a signature runner is called with)
    tensor: int  # index of the tensor in the signature's subgraph
    name: str  # the tensor's own name
    shape: list[int]  # shape signature: -1 for a dynamic dimension
    dtype: str  # numpy dtype name ("float32", "float16", "int64", ...)

    def to_json(self) -> dict[str, Any]:
        return {"shape": self.shape, "dtype": self.dtype, "tensor": self.name}


@dataclass
class Boundary:
    signature_key: str | None
    subgraph: int
    inputs: list[Port] = field(default_factory=list)
    outputs: list[Port] = field(default_factory=list)
    graph_outputs: list[int] = field(default_factory=list)  # the subgraph's own output tensors

    def detached_outputs(self) -> list[Port]:
        """The signature's outputs whose tensor is not one of its subgraph's outputs. The
        runtime keeps no value for such a tensor after invoke (it is an intermediate: XNNPACK
        may leave it unallocated, the reference kernels reuse its memory), so reading it
        through the signature fails ("Tensor data is null") or returns stale data.
        ai-edge-quantizer writes such files (``stages.quantize.swapped_outputs``)."""
        return [port for port in self.outputs if port.tensor not in self.graph_outputs]


def read(path: Path, signature_key: str | None = None) -> Boundary:
    """The boundary of signature ``signature_key``, by default the first signature
    (``serving_default`` if present), else of subgraph 0. Reads the file with the schema
    module of ai-edge-litert, or of TensorFlow where that is absent (``tflite_ops``)."""
    from stages.kit.tflite_ops import schema_module

    schema = schema_module()
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    dtypes = _dtype_names(schema)
    signatures = [model.SignatureDefs(i) for i in range(model.SignatureDefsLength())]
    chosen = next(
        (s for s in signatures if _text(s.SignatureKey()) == (signature_key or "serving_default")),
        signatures[0] if signatures and signature_key is None else None,
    )
    if signature_key is not None and chosen is None:
        raise ValueError(f"{path.name} has no signature {signature_key!r}")

    def port(subgraph: Any, key: str, index: int) -> Port:
        tensor = subgraph.Tensors(index)
        shape = (
            tensor.ShapeSignatureAsNumpy()
            if tensor.ShapeSignatureLength()
            else tensor.ShapeAsNumpy()
            if tensor.ShapeLength()
            else []
        )
        return Port(key, int(index), _text(tensor.Name()), [int(d) for d in shape], dtypes[tensor.Type()])

    if chosen is None:
        subgraph = model.Subgraphs(0)
        inputs = [port(subgraph, _text(subgraph.Tensors(i).Name()), int(i)) for i in subgraph.InputsAsNumpy()]
        outputs = [port(subgraph, _text(subgraph.Tensors(i).Name()), int(i)) for i in subgraph.OutputsAsNumpy()]
        return Boundary(None, 0, inputs, outputs, [port.tensor for port in outputs])
    index = int(chosen.SubgraphIndex())
    subgraph = model.Subgraphs(index)
    inputs = [
        port(subgraph, _text(chosen.Inputs(i).Name()), chosen.Inputs(i).TensorIndex())
        for i in range(chosen.InputsLength())
    ]
    outputs = [
        port(subgraph, _text(chosen.Outputs(i).Name()), chosen.Outputs(i).TensorIndex())
        for i in range(chosen.OutputsLength())
    ]
    graph_outputs = [int(i) for i in subgraph.OutputsAsNumpy()] if subgraph.OutputsLength() else []
    return Boundary(_text(chosen.SignatureKey()), index, inputs, outputs, graph_outputs)


def rewrite(
    source: Path,
    target: Path,
    *,
    input_perms: dict[str, list[int]] | None = None,
    output_perms: dict[str, list[int]] | None = None,
    renames: dict[str, str] | None = None,
    float_ports: bool = False,
) -> None:
    """Write ``target``: ``source`` with boundary transposes added and keys renamed.

    ``input_perms``/``output_perms`` and ``renames`` are keyed by the current signature
    key (or tensor name when the file has no signature). A renamed port's public
    tensor takes the new name too. With ``float_ports``, each quantized int8/uint8 port
    (one with a scale) without a transpose becomes float32: a QUANTIZE op after the input,
    a DEQUANTIZE op before the output, with the port's own scale and zero point
    (litert-torch's PT2E files come with int8 ports; the service's int8 files keep float
    ones unless ``int8_io``).
    """
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    input_perms, output_perms, renames = input_perms or {}, output_perms or {}, renames or {}
    data = source.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    if any(getattr(buffer, "offset", 0) > 1 for buffer in model.buffers or []):
        raise ValueError(f"{source.name} keeps weights outside the flatbuffer; its boundary cannot be rewritten")
    boundary = read(source)
    subgraph = model.subgraphs[boundary.subgraph]
    # The object API hands out read-only numpy views of the file; these two get edited.
    subgraph.inputs = [int(index) for index in subgraph.inputs]
    subgraph.outputs = [int(index) for index in subgraph.outputs]
    signature = next((s for s in model.signatureDefs or [] if _text(s.signatureKey) == boundary.signature_key), None)
    transpose = _opcode(model, schema, schema.BuiltinOperator.TRANSPOSE)
    prepended: list[Any] = []
    for kind, ports, perms in (("input", boundary.inputs, input_perms), ("output", boundary.outputs, output_perms)):
        for position, port in enumerate(ports):
            public_name = renames.get(port.key, port.name)
            perm = perms.get(port.key)
            public = port.tensor
            if perm is None and float_ports and _quantized(subgraph.tensors[port.tensor], schema):
                public = len(subgraph.tensors)
                subgraph.tensors.append(_float_copy(model, schema, subgraph.tensors[port.tensor]))
                subgraph.tensors[port.tensor].name = f"{public_name}_quantized".encode()
                op = schema.OperatorT()
                if kind == "input":
                    op.opcodeIndex = _opcode(model, schema, schema.BuiltinOperator.QUANTIZE)
                    op.builtinOptionsType = schema.BuiltinOptions.QuantizeOptions
                    op.builtinOptions = schema.QuantizeOptionsT()
                    op.inputs, op.outputs = [public], [port.tensor]
                    prepended.append(op)
                else:
                    op.opcodeIndex = _opcode(model, schema, schema.BuiltinOperator.DEQUANTIZE)
                    op.builtinOptionsType = schema.BuiltinOptions.DequantizeOptions
                    op.builtinOptions = schema.DequantizeOptionsT()
                    op.inputs, op.outputs = [port.tensor], [public]
                    subgraph.operators.append(op)
            if perm is not None:
                internal = subgraph.tensors[port.tensor]
                if len(perm) != len(internal.shape) or sorted(perm) != list(range(len(perm))):
                    raise ValueError(f"{kind} {port.key!r}: {perm} is not a permutation of rank {len(internal.shape)}")
                public = len(subgraph.tensors)
                subgraph.tensors.append(_permuted_copy(model, schema, internal, perm, inverse=kind == "input"))
                internal.name = f"{public_name}_internal".encode()
                perm_tensor = _constant(model, schema, subgraph, np.asarray(perm, np.int32), f"{public_name}_perm")
                op = schema.OperatorT()
                op.opcodeIndex = transpose
                op.builtinOptionsType = schema.BuiltinOptions.TransposeOptions
                op.builtinOptions = schema.TransposeOptionsT()
                if kind == "input":
                    op.inputs, op.outputs = [public, perm_tensor], [port.tensor]
                    prepended.append(op)
                else:
                    op.inputs, op.outputs = [port.tensor, perm_tensor], [public]
                    subgraph.operators.append(op)
            subgraph.tensors[public].name = public_name.encode()
            boundary_list = subgraph.inputs if kind == "input" else subgraph.outputs
            boundary_list[boundary_list.index(port.tensor)] = public
            if signature is not None:
                entry = (signature.inputs if kind == "input" else signature.outputs)[position]
                entry.tensorIndex = public
                entry.name = renames.get(port.key, port.key).encode()
    # An input's transpose must run before anything reads the internal tensor.
    subgraph.operators[:0] = prepended
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    target.write_bytes(builder.Output())


def channel_last_perm(rank: int) -> list[int]:
    """NC... -> N...C (NCHW -> NHWC for rank 4)."""
    return [0, *range(2, rank), 1]


def channel_first_perm(rank: int) -> list[int]:
    """N...C -> NC... (NHWC -> NCHW for rank 4)."""
    return [0, rank - 1, *range(1, rank - 1)]


def permute(shape: list[int], perm: list[int]) -> list[int]:
    return [shape[axis] for axis in perm]


def shape_fits(actual: list[int], wanted: list[int]) -> bool:
    """``actual`` (a shape signature, -1 dynamic) can hold arrays of shape ``wanted``."""
    return len(actual) == len(wanted) and all(a in (-1, w) for a, w in zip(actual, wanted, strict=True))


def _permuted_copy(model: Any, schema: Any, tensor: Any, perm: list[int], inverse: bool) -> Any:
    order = sorted(range(len(perm)), key=perm.__getitem__) if inverse else perm
    twin = copy.copy(tensor)
    twin.shape = [int(tensor.shape[axis]) for axis in order]
    if tensor.shapeSignature is not None and len(tensor.shapeSignature):
        twin.shapeSignature = [int(tensor.shapeSignature[axis]) for axis in order]
    twin.quantization = copy.deepcopy(tensor.quantization)
    twin.buffer = _empty_buffer(model, schema)
    return twin


def _quantized(tensor: Any, schema: Any) -> bool:
    scale = getattr(tensor.quantization, "scale", None)
    return tensor.type in (schema.TensorType.INT8, schema.TensorType.UINT8) and scale is not None and len(scale) > 0


def _float_copy(model: Any, schema: Any, tensor: Any) -> Any:
    twin = copy.copy(tensor)
    twin.type = schema.TensorType.FLOAT32
    twin.quantization = None
    twin.buffer = _empty_buffer(model, schema)
    return twin


def _constant(model: Any, schema: Any, subgraph: Any, value: Any, name: str) -> int:
    import numpy as np

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value.tobytes(), dtype=np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.shape = list(value.shape)
    tensor.type = schema.TensorType.INT32
    tensor.buffer = len(model.buffers) - 1
    tensor.name = name.encode()
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _empty_buffer(model: Any, schema: Any) -> int:
    model.buffers.append(schema.BufferT())
    return len(model.buffers) - 1


def _opcode(model: Any, schema: Any, builtin: int) -> int:
    for index, code in enumerate(model.operatorCodes or []):
        if max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    # Codes up to 127 also go in the deprecated byte, which older runtimes read.
    code.deprecatedBuiltinCode = min(builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _dtype_names(schema: Any) -> dict[int, str]:
    return {value: key.lower() for key, value in vars(schema.TensorType).items() if key.isupper()}


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
