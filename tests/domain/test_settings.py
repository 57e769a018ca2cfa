"""What MODELPORT_ENVIRONMENT=production refuses at start (docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from domain.config import MIN_PRODUCTION_API_KEY, DatabaseSettings, Settings

POSTGRES = "postgresql+psycopg://modelport@db:5432/modelport"
STRONG_KEY = "k" * MIN_PRODUCTION_API_KEY


def production(tmp_path: Path, database_url: str = POSTGRES, api_key: str = STRONG_KEY) -> Settings:
    return Settings(
        environment="production",
        data_dir=tmp_path,
        api_key=api_key,
        database=DatabaseSettings(DATABASE_URL=database_url),
    )


def test_production_takes_postgresql_and_a_long_key_or_none(tmp_path: Path) -> None:
    assert production(tmp_path).environment == "production"
    assert production(tmp_path, api_key="").api_key == ""


@pytest.mark.parametrize("database_url", ["", "sqlite:///var/modelport.db"])
def test_production_refuses_the_embedded_sqlite(tmp_path: Path, database_url: str) -> None:
    with pytest.raises(ValidationError, match="production refuses: the database is SQLite") as refused:
        production(tmp_path, database_url=database_url)
    assert "set DATABASE_URL to PostgreSQL" in str(refused.value)
    assert "MODELPORT_API_KEY" not in str(refused.value)


def test_production_refuses_a_short_admin_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=f"MODELPORT_API_KEY has {MIN_PRODUCTION_API_KEY - 1} characters"):
        production(tmp_path, api_key="k" * (MIN_PRODUCTION_API_KEY - 1))


def test_production_names_every_problem_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        production(tmp_path, database_url="", api_key="changethis")
    assert "the database is SQLite" in str(refused.value)
    assert "MODELPORT_API_KEY has 10 characters" in str(refused.value)


def test_development_allows_both(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_key="dev")
    assert settings.environment == "development"
    assert settings.database_url.startswith("sqlite:///")


def test_an_unknown_environment_is_refused_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A typo must not silently skip the production checks.
    monkeypatch.setenv("MODELPORT_ENVIRONMENT", "prod")
    with pytest.raises(ValidationError, match="'development' or 'production'"):
        Settings()
    monkeypatch.setenv("MODELPORT_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", POSTGRES)
    monkeypatch.setenv("MODELPORT_API_KEY", "short")
    with pytest.raises(ValidationError, match="MODELPORT_API_KEY has 5 characters"):
        Settings()
