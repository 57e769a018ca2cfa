"""HTTP API tests: submission, job resources, errors, concurrency, metrics (TestClient on real databases)."""
