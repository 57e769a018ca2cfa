"""The HTTP API (FastAPI): routes, request schemas, problem responses and the submission services."""
