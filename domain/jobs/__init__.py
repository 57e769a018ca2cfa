"""The job domain: a spec becomes a plan of stages, candidates are selected, and a finished job gets its report."""
