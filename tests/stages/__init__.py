"""Stage tests: each stage run by its toolchain's own interpreter on tiny models the tests build."""
