"""The job spec: what the user asks for. Validated at submission; the worker gets it normalized."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ModelFormat = Literal["auto", "state_dict", "torchscript", "exported_program", "pickled_module", "onnx"]
Target = Literal["onnx", "saved_model", "tflite"]
Precision = Literal["float32", "dynamic_range", "float16", "int8"]
ToolchainChoice = Literal["auto", "best", "onnx-tf", "onnx2tf", "litert-torch"]
DType = Literal["float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
# Dimensions beyond this are refused at submission: they cannot be a real model input.
# A stage refuses a larger shape a model declares itself (stages/kit/contract.py, the same number).
MAX_INPUT_ELEMENTS = 256 * 1024 * 1024

DEFAULT_TOLERANCE: dict[str, float] = {"float32": 1e-4, "float16": 1e-2}
DEFAULT_TARGETS: tuple[Target, ...] = ("onnx", "saved_model", "tflite")
DEFAULT_PRECISIONS: tuple[Precision, ...] = ("float32",)


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Dotted path of an allow-listed constructor, e.g. torchvision.models.resnet18")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if _NAME.match(value):  # a bare name: say what its dotted path would be
            raise ValueError(
                f"must be a dotted path: 'torchvision.models.{value}' for a torchvision model, "
                f"'transformers.{value}' for a transformers class"
            )
        if not _DOTTED.match(value):
            raise ValueError("must be a dotted path such as 'torchvision.models.resnet18'")
        return value


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int | str] = Field(min_length=0, max_length=8)
    dtype: DType = "float32"
    range: tuple[float, float] | None = None

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be an identifier (letters, digits, underscore)")
        return value

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: list[int | str]) -> list[int | str]:
        elements = 1
        for dim in value:
            if isinstance(dim, str):
                if not _NAME.match(dim):
                    raise ValueError(f"dynamic dimension {dim!r} must be an identifier such as 'batch'")
            elif dim < 1:
                raise ValueError(f"dimension {dim} must be a positive integer or a name")
            else:
                elements *= dim
        if elements > MAX_INPUT_ELEMENTS:
            # Twenty digits say enough; a product of huge dimensions may not even print.
            count = str(elements) if elements < 10**20 else "more than 10^20"
            raise ValueError(f"declares {count} elements per sample; the limit is {MAX_INPUT_ELEMENTS}")
        return value

    @model_validator(mode="after")
    def _range_order(self) -> InputSpec:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError("range must be [low, high] with low < high")
        return self


class JobSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_format: ModelFormat = "auto"
    architecture: Architecture | None = None
    inputs: list[InputSpec] = Field(default_factory=list, max_length=32)
    opset: int | None = Field(default=None, ge=7, le=23)
    exporter: Literal["auto", "torchscript", "dynamo"] = "auto"
    toolchain: ToolchainChoice = "auto"
    targets: list[Target] = Field(default_factory=lambda: list(DEFAULT_TARGETS), min_length=1)
    quantization: list[Precision] = Field(default_factory=lambda: list(DEFAULT_PRECISIONS), min_length=1)
    int8_io: bool = Field(
        default=False,
        description="With int8: model_int8.tflite takes and returns int8 tensors (scale and zero point in the report)",
    )
    layout: Literal["nchw", "nhwc"] = "nchw"
    tolerance: dict[Precision, float] = Field(default_factory=dict)
    validation_samples: int = Field(default=8, ge=1, le=1024)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    strict: bool = False
    callback_url: str | None = None

    @field_validator("targets", "quantization")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("tolerance")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for key, tol in value.items():
            if not 0 < tol < 1:
                raise ValueError(f"tolerance for {key} must be in (0, 1) (a fraction of the output's scale)")
        return value

    @model_validator(mode="after")
    def _int8_io_needs_int8(self) -> JobSpec:
        if self.int8_io and "int8" not in self.quantization:
            raise ValueError("int8_io applies to the int8 .tflite only: add 'int8' to quantization")
        return self

    @model_validator(mode="after")
    def _input_names_unique(self) -> JobSpec:
        names = [i.name for i in self.inputs]
        if len(names) != len(set(names)):
            raise ValueError("input names must be unique")
        return self

    def effective_tolerance(self) -> dict[str, float]:
        return {**DEFAULT_TOLERANCE, **{str(k): v for k, v in self.tolerance.items()}}
