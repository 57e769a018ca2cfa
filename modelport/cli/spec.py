"""The job spec from ``modelport convert``'s flags: pure functions, so the mapping is tested without a server."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelport.schemas.spec import JobSpec

_DIM = re.compile(r"^(\d+|[A-Za-z_][A-Za-z0-9_]*)$")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")


def json_argument(value: str) -> Any:
    """A JSON value given inline or as ``@file.json``."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error.msg}): {value[:60]}") from None


def json_object(value: str) -> dict[str, Any]:
    parsed = json_argument(value)
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(parsed).__name__}: {value[:60]}")
    return parsed


def comma_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. float32,int8")
    return items


def input_argument(value: str) -> dict[str, Any]:
    """``[NAME=]DIMS[:DTYPE]``: ``1x3x224x224``, ``image=1x3x224x224``, ``ids=batchx128:int64``,
    ``ids=1,128:int64``. Dimensions are separated by ``x`` (or ``,`` when a name contains an x); a
    dimension is a positive integer or a name (dynamic). The name defaults to ``input`` (``input_<i>``
    when there are several, see ``build_spec``), the dtype to float32."""
    name, _, rest = value.rpartition("=")
    dims_text, _, dtype = rest.partition(":")
    dtype = dtype or "float32"
    if dtype not in DTYPES:
        raise argparse.ArgumentTypeError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    parts = dims_text.split(",") if "," in dims_text else dims_text.split("x")
    if not dims_text or not all(_DIM.match(p) for p in parts):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected [NAME=]DIMS[:DTYPE] such as 1x3x224x224 or ids=1x128:int64"
        )
    shape: list[int | str] = [int(p) if p.isdigit() else p for p in parts]
    if any(d == 0 for d in shape):
        raise argparse.ArgumentTypeError(f"{value!r}: a dimension must be positive")
    entry: dict[str, Any] = {"shape": shape, "dtype": dtype}
    if name:
        entry["name"] = name
    return entry


def architecture_name(value: str) -> str:
    """A dotted constructor path; a bare name means torchvision's (``resnet18`` → ``torchvision.models.resnet18``)."""
    return value if "." in value else f"torchvision.models.{value}"


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The spec sent with the upload: ``--spec`` (a JSON object) as the base, each flag given on top.
    Flags not given are left out, so the server's defaults apply (docs/api.md)."""
    spec: dict[str, Any] = dict(args.spec or {})
    if args.arch:
        architecture: dict[str, Any] = {"name": architecture_name(args.arch)}
        if args.arch_kwargs:
            architecture["kwargs"] = args.arch_kwargs
        if args.arch_config:
            architecture["config"] = args.arch_config
        spec["architecture"] = architecture
    elif args.arch_kwargs or args.arch_config:
        raise argparse.ArgumentTypeError("--arch-kwargs and --arch-config need --arch")
    if args.input:
        inputs = [dict(entry) for entry in args.input]
        for index, entry in enumerate(inputs):
            entry.setdefault("name", "input" if len(inputs) == 1 else f"input_{index}")
        spec["inputs"] = [{"name": e["name"], "shape": e["shape"], "dtype": e["dtype"]} for e in inputs]
    flags = {
        "model_format": args.format,
        "targets": args.targets,
        "quantization": args.quant,
        "toolchain": args.toolchain,
        "layout": args.layout,
        "opset": args.opset,
        "exporter": args.exporter,
        "validation_samples": args.validation_samples,
        "tolerance": args.tolerance,
    }
    spec.update({key: value for key, value in flags.items() if value is not None})
    if args.int8_io:
        spec["int8_io"] = True
    if args.strict:
        spec["strict"] = True
    return spec


def check_spec(spec: dict[str, Any]) -> None:
    """Refuse, before anything is uploaded, a spec the service's own schema (``JobSpec``, shared with
    the server) refuses: a typo in ``--quant`` or a shape no model has is known without sending a
    multi-GB file first. What only the server can know (the sniffed format, the allow-list) it still
    checks. Raises ``argparse.ArgumentTypeError`` naming each field and problem, as the API's 422
    ``invalid_spec`` would."""
    try:
        JobSpec.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, item['loc'])) or 'spec'}: {item['msg']}" for item in error.errors(include_url=False)
        )
        raise argparse.ArgumentTypeError(f"invalid_spec (checked before the upload): {problems}") from None


def tolerance_argument(value: str) -> dict[str, float]:
    """``float32=1e-3,float16=2e-2``: max abs error over the output's scale, per precision."""
    tolerance: dict[str, float] = {}
    for item in comma_list(value):
        precision, _, number = item.partition("=")
        try:
            tolerance[precision.strip()] = float(number)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: expected PRECISION=NUMBER, e.g. float32=1e-3") from None
    return tolerance
