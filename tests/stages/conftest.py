"""Fixtures of the stage tests: real stage processes in the real toolchain interpreters
(helpers in tests/support/stage_runner.py, the tiny models in tests/support/models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stage_runner import make_stage_models


@pytest.fixture(scope="session")
def stage_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models (and hostile files) written once per session by the torch environment."""
    return make_stage_models(tmp_path_factory.mktemp("stage-models"))
