"""Helpers shared by tests/ and bench/, never imported by the service: throwaway databases,
toolchain interpreters, tiny model configs."""
