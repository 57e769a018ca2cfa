"""API error classes: each a status, a stable code and a title, rendered as problem+json."""
