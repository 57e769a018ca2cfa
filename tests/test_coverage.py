"""Every supported input format, converter and precision has a test that exercises it
(optimum's test_all_models_tested idea): adding one without a test fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.schemas.spec import DEFAULT_TOLERANCE, JobSpec
from app.services.jobs import IMPLEMENTED_FORMATS
from stages.torch_prepare import SUPPORTED_FORMATS as PREPARED_FORMATS
from worker.plan import CONVERTERS, PRIORITY

TESTS = Path(__file__).resolve().parent
STAGE_TESTS = "\n".join(p.read_text() for p in (TESTS / "stages").glob("test_*.py"))
ALL_TESTS = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py") if p.name != "test_coverage.py")


@pytest.mark.parametrize("converter", sorted(CONVERTERS))
def test_every_converter_stage_is_run_by_a_test(converter: str) -> None:
    entry = CONVERTERS[converter].entry
    assert f'"{entry}"' in STAGE_TESTS, f"no test under tests/stages runs the {entry!r} stage of {converter!r}"


@pytest.mark.parametrize("model_format", IMPLEMENTED_FORMATS)
def test_every_input_format_is_converted_by_a_test(model_format: str) -> None:
    assert f'spec("{model_format}"' in STAGE_TESTS or f'"model_format": "{model_format}"' in STAGE_TESTS, (
        f"no stage test converts a {model_format!r} upload"
    )


@pytest.mark.parametrize("model_format", IMPLEMENTED_FORMATS)
def test_every_input_format_has_a_loader_and_a_candidate_order(model_format: str) -> None:
    # Without its own PRIORITY entry a format silently takes the state dict's candidates.
    assert model_format in PREPARED_FORMATS, f"torch.prepare cannot load a {model_format!r} upload"
    assert model_format in PRIORITY, f"worker/plan.py PRIORITY has no candidate order for {model_format!r}"


@pytest.mark.parametrize("precision", ["float32", "dynamic_range", "float16", "int8"])
def test_every_precision_is_produced_by_a_test(precision: str) -> None:
    assert f'"{precision}"' in ALL_TESTS, f"no test produces a {precision!r} artifact"
    assert precision in DEFAULT_TOLERANCE or precision in ("dynamic_range", "int8")


# Spec options that change what an artifact's bytes are, with the value that does.
ARTIFACT_OPTIONS = {"layout": "nhwc", "int8_io": True}


@pytest.mark.parametrize("option", sorted(ARTIFACT_OPTIONS))
def test_every_artifact_option_is_set_by_a_stage_test(option: str) -> None:
    assert option in JobSpec.model_fields, f"{option!r} is no longer a spec field"
    value = ARTIFACT_OPTIONS[option]
    literal = f'"{value}"' if isinstance(value, str) else repr(value)  # as ruff formats it
    written = (f'"{option}": {literal}', f"{option}={literal}")
    assert any(form in STAGE_TESTS for form in written), f"no stage test produces an artifact with {option}={literal}"
