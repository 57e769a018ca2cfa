"""Every registered input format, converter, validator, stage, precision and target is taken
through a real conversion by a test (Hugging Face Optimum's ``test_all_models_tested``).

The registries (the spec's Literals, domain/jobs/plan.py's converters and stage plan) minus
the values of the rows in tests/support/matrix.py, which the conversion tests parametrise
over and assert to pass (tests/stages/test_families.py, test_conversions.py,
test_quantize.py). A test that expects a refusal is no row, so it never counts. Cheap:
this module only compares sets; the conversions run in those tests.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest

from app.services.jobs import IMPLEMENTED_FORMATS
from domain.jobs.plan import CONVERTERS, PRIORITY, candidates, plan_stages
from modelport.schemas.spec import DEFAULT_TOLERANCE, ModelFormat, Precision, Target
from stages.export.prepare import SUPPORTED_FORMATS as PREPARED_FORMATS
from stages.registry import STAGES
from tests.support.matrix import LITERT, QUANTIZATIONS, UPLOAD_CONVERSIONS, Conversion, all_conversions

ROWS = all_conversions()
FORMATS = {f for f in get_args(ModelFormat) if f != "auto"}  # auto is a detection, not a format
PRECISIONS = set(get_args(Precision))
TARGETS = set(get_args(Target))
# The widest plan: every target, every precision, every candidate and its flex validation.
WIDEST: dict[str, Any] = {
    "model_format": "state_dict",
    "toolchain": "best",
    "targets": sorted(TARGETS),
    "quantization": sorted(PRECISIONS),
}


def stage_key(entry: str | None, env: str) -> str:
    return f"{entry}@{env}"


PLANNED = {stage_key(s.entry, s.toolchain) for s in plan_stages(WIDEST) if s.entry is not None}
VALIDATORS = {stage_key(s.entry, s.toolchain) for s in plan_stages(WIDEST) if s.role == "validate"}


def stages_run(row: Conversion) -> set[str]:
    """The stage processes a row runs: prepare, its converter, its validations, quantize."""
    converter = CONVERTERS[row.converter]
    ran = {stage_key("export.prepare", "torch"), stage_key(converter.entry, converter.env), *row.validators}
    if set(row.precisions) - {"float32"}:
        ran.add(stage_key("quantize.litert", "torch"))
    return ran


def missing(registry: set[str], covered: set[str]) -> list[str]:
    return sorted(registry - covered)


def test_every_input_format_is_converted() -> None:
    assert missing(FORMATS, {row.model_format for row in ROWS.values()}) == []


def test_every_converter_converts() -> None:
    assert missing(set(CONVERTERS), {row.converter for row in ROWS.values()}) == []


def test_every_validator_judges_a_converted_file() -> None:
    # Stock LiteRT in the torch env, and TensorFlow's interpreter (onnx-tf env) for flex ops.
    assert len(VALIDATORS) == 2
    assert missing(VALIDATORS, {v for row in ROWS.values() for v in row.validators}) == []


def test_every_planned_stage_runs() -> None:
    assert missing(PLANNED, set().union(*(stages_run(row) for row in ROWS.values()))) == []


def test_every_precision_is_produced() -> None:
    assert missing(PRECISIONS, {p for row in ROWS.values() for p in row.precisions}) == []


def test_every_target_is_produced() -> None:
    assert missing(TARGETS, {t for row in ROWS.values() for t in row.targets}) == []


@pytest.mark.parametrize("name", sorted(ROWS))
def test_rows_name_registered_things(name: str) -> None:
    # A typo in the table would count as coverage of nothing.
    row = ROWS[name]
    assert row.model_format in FORMATS
    assert candidates({"model_format": row.model_format, "toolchain": row.converter}) == [row.converter], (
        f"{row.converter} does not take a {row.model_format} upload"
    )
    assert set(row.validators) <= VALIDATORS
    assert row.validators[0] == LITERT  # flex validation only follows stock LiteRT's
    assert "float32" in row.precisions
    assert set(row.precisions) <= PRECISIONS
    assert set(row.targets) <= TARGETS
    if "saved_model" in row.targets:
        assert CONVERTERS[row.converter].saved_model, f"{row.converter} writes no SavedModel"
    for key in stages_run(row):
        entry, env = key.split("@")
        assert STAGES[entry].toolchain in (env, "any") or entry == "validate.tflite", key


def test_the_conversion_tables_are_the_ones_the_tests_run() -> None:
    # The tables are imported by the tests that run them; each table has its rows.
    from tests.stages import test_conversions, test_families, test_quantize

    assert sorted(test_families.EXPECTED) == sorted(test_families.CELLS)
    assert test_conversions.UPLOAD_CONVERSIONS is UPLOAD_CONVERSIONS
    assert test_quantize.QUANTIZATIONS is QUANTIZATIONS
    assert list(test_quantize.PRECISIONS) == [p for p in QUANTIZATIONS["mobilenet_v2"].precisions if p != "float32"]


@pytest.mark.parametrize("model_format", IMPLEMENTED_FORMATS)
def test_every_input_format_has_a_loader_and_a_candidate_order(model_format: str) -> None:
    # Without its own PRIORITY entry a format silently takes the state dict's candidates.
    assert model_format in PREPARED_FORMATS, f"export.prepare cannot load a {model_format!r} upload"
    assert model_format in PRIORITY, f"domain/jobs/plan.py PRIORITY has no candidate order for {model_format!r}"


def test_every_implemented_format_is_a_spec_format() -> None:
    assert set(IMPLEMENTED_FORMATS) == FORMATS


def test_every_precision_has_a_verdict_rule() -> None:
    # float32 and float16 are judged by a tolerance; dynamic_range and int8 are advisory
    # (by cosine, docs/report.md), so they have none.
    advisory = {"dynamic_range", "int8"}
    assert set(DEFAULT_TOLERANCE) == PRECISIONS - advisory


def test_upload_rows_cover_every_format_but_the_state_dict() -> None:
    # The state dict's conversions are the family matrix; the other formats are each converted here.
    assert {row.model_format for row in UPLOAD_CONVERSIONS.values()} == FORMATS - {"state_dict"}
