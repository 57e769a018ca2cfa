"""The test suite, filed by kind: api, worker, domain, stages, e2e, project; helpers in support/."""
