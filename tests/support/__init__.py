"""Test helpers shared by every kind of test: tiny models, toolchains, databases, the running stack."""
