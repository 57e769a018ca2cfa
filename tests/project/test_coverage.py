"""Every registered input format, converter, validator, stage, precision and target is taken
through a real conversion by a test (Hugging Face Optimum's ``test_all_models_tested``).

``untested`` is a set difference: the registries, read from the code (the spec's Literals in
app/schemas/spec.py, ``CONVERTERS`` and ``PRIORITY`` of domain/jobs/plan.py and the stages of
its widest plan) minus what the rows of tests/support/matrix.py convert. Only the rows that
a test asserting success parametrises over count (``SUCCESS_TESTS``, read from the tests'
own ``parametrize`` marks): a test that expects a refusal is no row, and a refused cell of
the family matrix is none either. The self-checks at the end add an entry to a registry, or
turn a converter's cells into refusals, and watch the difference name it. Cheap: this module
only compares sets; the conversions run in those tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args

import pytest

from app.services.jobs import IMPLEMENTED_FORMATS
from domain.jobs import plan
from modelport.schemas import spec as spec_schema
from modelport.schemas.spec import DEFAULT_TOLERANCE
from stages.export.prepare import SUPPORTED_FORMATS as PREPARED_FORMATS
from stages.registry import STAGES
from tests.stages import test_conversions, test_families, test_int8_families, test_quantize
from tests.support import matrix
from tests.support.matrix import (
    INT8_FAMILIES,
    LITERT,
    QUANTIZATIONS,
    UPLOAD_CONVERSIONS,
    Conversion,
    all_conversions,
)
from tests.support.models import TINY_MODELS

# The tests that run a row and assert that it passes, each with the row name of a parameter.
SUCCESS_TESTS: list[tuple[Callable[..., None], Callable[[Any], str]]] = [
    (test_families.test_passing_cells_are_builtin_only_and_within_tolerance, lambda cell: "family_{}_{}".format(*cell)),
    (test_families.test_flex_cells_pass_in_tensorflows_interpreter, lambda cell: "family_{}_{}".format(*cell)),
    (test_conversions.test_the_upload_converts_to_a_tflite_within_tolerance, lambda name: name),
    (test_quantize.test_every_precision_is_produced_with_float32_io, lambda case: f"quantize_{case}"),
    (test_int8_families.test_int8_is_produced_by_the_measured_attempt, lambda family: f"int8_{family}"),
]


def parametrised(test: Callable[..., None]) -> list[Any]:
    """The values a test's ``@pytest.mark.parametrize`` gives it (one mark per test here)."""
    (mark,) = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
    return list(mark.args[1])


def rows_under_test() -> dict[str, Conversion]:
    """The rows of the tables that a success test really runs."""
    names = {name(value) for test, name in SUCCESS_TESTS for value in parametrised(test)}
    return {name: row for name, row in all_conversions().items() if name in names}


def stage_key(entry: str | None, env: str) -> str:
    return f"{entry}@{env}"


def registries() -> dict[str, set[str]]:
    """What the service offers, read from the code at each call (so a new entry shows at once)."""
    formats = {f for f in get_args(spec_schema.ModelFormat) if f != "auto"}  # auto is a detection
    precisions, targets = set(get_args(spec_schema.Precision)), set(get_args(spec_schema.Target))
    # The widest plan: every target, every precision, every candidate and its flex validation.
    widest = {"model_format": "state_dict", "toolchain": "best", "targets": sorted(targets)}
    stages = plan.plan_stages({**widest, "quantization": sorted(precisions)})
    return {
        "formats": formats,
        "converters": set(plan.CONVERTERS) | {c for order in plan.PRIORITY.values() for c in order},
        "validators": {stage_key(s.entry, s.toolchain) for s in stages if s.role == "validate"},
        "stages": {stage_key(s.entry, s.toolchain) for s in stages if s.entry is not None},
        "precisions": precisions,
        "targets": targets,
    }


def stages_run(row: Conversion) -> set[str]:
    """The stage processes a row runs: prepare, its converter, its validations, quantize."""
    converter = plan.CONVERTERS[row.converter]
    ran = {stage_key("export.prepare", "torch"), stage_key(converter.entry, converter.env), *row.validators}
    if set(row.precisions) - {"float32"}:
        ran.add(stage_key("quantize.litert", "torch"))
    return ran


def covered(rows: Iterable[Conversion]) -> dict[str, set[str]]:
    rows = list(rows)
    return {
        "formats": {row.model_format for row in rows},
        "converters": {row.converter for row in rows},
        "validators": {v for row in rows for v in row.validators},
        "stages": set().union(*(stages_run(row) for row in rows)),
        "precisions": {p for row in rows for p in row.precisions},
        "targets": {t for row in rows for t in row.targets},
    }


def untested(registry: dict[str, set[str]], rows: Iterable[Conversion]) -> dict[str, list[str]]:
    """Per registry, its entries that no row converts (empty lists when all are tested)."""
    done = covered(rows)
    return {kind: sorted(entries - done[kind]) for kind, entries in registry.items()}


NOTHING_UNTESTED = {kind: [] for kind in registries()}


def test_every_registered_entry_is_converted_by_a_test() -> None:
    assert untested(registries(), rows_under_test().values()) == NOTHING_UNTESTED


def test_every_row_is_run_by_a_test_that_asserts_success() -> None:
    # A row no success test runs would count as coverage of nothing.
    assert sorted(rows_under_test()) == sorted(all_conversions())


def test_there_are_two_validators() -> None:
    # Stock LiteRT in the torch env, and TensorFlow's interpreter (onnx-tf env) for flex ops.
    assert registries()["validators"] == {LITERT, matrix.FLEX}


@pytest.mark.parametrize("name", sorted(all_conversions()))
def test_rows_name_registered_things(name: str) -> None:
    # A typo in the table would count as coverage of nothing.
    row, registry = all_conversions()[name], registries()
    assert row.tiny in TINY_MODELS
    assert row.model_format in registry["formats"]
    assert plan.candidates({"model_format": row.model_format, "toolchain": row.converter}) == [row.converter], (
        f"{row.converter} does not take a {row.model_format} upload"
    )
    assert set(row.validators) <= registry["validators"]
    assert row.validators[0] == LITERT  # flex validation only follows stock LiteRT's
    assert "float32" in row.precisions
    assert set(row.precisions) <= registry["precisions"]
    assert set(row.targets) <= registry["targets"]
    if "saved_model" in row.targets:
        assert plan.CONVERTERS[row.converter].saved_model, f"{row.converter} writes no SavedModel"
    for key in stages_run(row):
        entry, env = key.split("@")
        assert STAGES[entry].toolchain in (env, "any") or entry == "validate.tflite", key


def test_the_conversion_tables_are_the_ones_the_tests_run() -> None:
    assert sorted(test_families.EXPECTED) == sorted(test_families.CELLS)
    assert test_conversions.UPLOAD_CONVERSIONS is UPLOAD_CONVERSIONS
    assert test_quantize.QUANTIZATIONS is QUANTIZATIONS
    assert list(test_int8_families.EXPECTED) == list(INT8_FAMILIES)
    assert list(test_quantize.PRECISIONS) == [p for p in QUANTIZATIONS["mobilenet_v2"].precisions if p != "float32"]


@pytest.mark.parametrize("model_format", IMPLEMENTED_FORMATS)
def test_every_input_format_has_a_loader_and_a_candidate_order(model_format: str) -> None:
    # Without its own PRIORITY entry a format silently takes the state dict's candidates.
    assert model_format in PREPARED_FORMATS, f"export.prepare cannot load a {model_format!r} upload"
    assert model_format in plan.PRIORITY, f"domain/jobs/plan.py PRIORITY has no candidate order for {model_format!r}"


def test_every_implemented_format_is_a_spec_format() -> None:
    assert set(IMPLEMENTED_FORMATS) == registries()["formats"]


def test_every_precision_has_a_verdict_rule() -> None:
    # float32 and float16 are judged by a tolerance; dynamic_range and int8 are advisory
    # (by cosine, docs/report.md), so they have none.
    advisory = {"dynamic_range", "int8"}
    assert set(DEFAULT_TOLERANCE) == registries()["precisions"] - advisory


def test_upload_rows_cover_every_format_but_the_state_dict() -> None:
    # The state dict's conversions are the family matrix; the other formats are each converted here.
    assert {row.model_format for row in UPLOAD_CONVERSIONS.values()} == registries()["formats"] - {"state_dict"}


# Self-checks: the difference names what a registry gains without a test.


def extended(literal: Any, value: str) -> Any:
    return Literal[(*get_args(literal), value)]  # type: ignore[valid-type]


@pytest.mark.parametrize(
    ("kind", "add"),
    [
        ("formats", lambda mp: mp.setattr(spec_schema, "ModelFormat", extended(spec_schema.ModelFormat, "keras"))),
        ("precisions", lambda mp: mp.setattr(spec_schema, "Precision", extended(spec_schema.Precision, "int4"))),
        ("targets", lambda mp: mp.setattr(spec_schema, "Target", extended(spec_schema.Target, "coreml"))),
        (
            "converters",
            lambda mp: mp.setitem(plan.CONVERTERS, "tvm", plan.Converter("tvm", "tvm", "convert.tvm", "onnx")),
        ),
        ("converters", lambda mp: mp.setitem(plan.PRIORITY, "onnx", [*plan.PRIORITY["onnx"], "tvm"])),
    ],
    ids=["format", "precision", "target", "converter", "priority"],
)
def test_a_registry_entry_without_a_test_is_named(
    monkeypatch: pytest.MonkeyPatch, kind: str, add: Callable[[pytest.MonkeyPatch], None]
) -> None:
    add(monkeypatch)
    gaps = untested(registries(), rows_under_test().values())
    assert gaps[kind] == [{"formats": "keras", "precisions": "int4", "targets": "coreml"}.get(kind, "tvm")]
    assert {k: v for k, v in gaps.items() if k != kind} == {k: [] for k in gaps if k != kind}


def test_a_refused_cell_is_no_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    # Were every onnx-tf cell of the family matrix a refusal (and its upload row gone),
    # onnx-tf would be untested; the SavedModel target stays covered by onnx2tf's row.
    refused = {
        cell: "failed:conversion_failed" if cell[1] == "onnx-tf" else outcome
        for cell, outcome in matrix.FAMILY_OUTCOMES.items()
    }
    monkeypatch.setattr(matrix, "FAMILY_OUTCOMES", refused)
    rows = [row for row in matrix.all_conversions().values() if row.converter != "onnx-tf"]
    assert matrix.family_conversions()  # the other converters' cells still count
    gaps = untested(registries(), rows)
    assert gaps["converters"] == ["onnx-tf"]
    assert gaps["targets"] == []
    assert gaps["validators"] == [matrix.FLEX]  # only onnx-tf's cells need flex ops
    assert gaps["stages"] == ["convert.onnx_tf@onnx-tf", matrix.FLEX]
