"""Worker tests: the stage chain, the runner, cancellation, restarts and retention (real Celery, Redis, databases)."""
