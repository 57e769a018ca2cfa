"""The Python client and the modelport command (issue 13)."""
