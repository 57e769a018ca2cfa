"""ModelPort's domain: settings, database, ORM models, object store, toolchains, job rules (no FastAPI, no Celery)."""
