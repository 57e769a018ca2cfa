"""The migrations build the schema the ORM expects, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from domain.migrate import alembic_config, upgrade
from domain.models import Base


def test_migrations_match_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    assert {"jobs", "stage_runs", "artifacts", "api_keys", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_upgrade_is_idempotent(db_url: str) -> None:
    heads = ScriptDirectory.from_config(alembic_config(db_url)).get_heads()
    assert len(heads) == 1, heads  # one line of migrations
    upgrade(db_url)  # the fixture already upgraded once: twice more
    upgrade(db_url)
    engine = create_engine(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert context.get_current_heads() == tuple(heads)
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
