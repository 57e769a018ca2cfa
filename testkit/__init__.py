"""What tests/ and bench/ share: throwaway databases, toolchain interpreters, tiny model configs; not the service."""
