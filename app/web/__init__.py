"""The web page (``GET /``) and the vendored netron viewer: static files, no build step."""
