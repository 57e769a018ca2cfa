"""Project tests: coverage of the registries by the tests, and the deployment files' structure."""
