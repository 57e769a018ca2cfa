"""ModelPort control plane: the HTTP API, the domain services and the persistence."""
