"""ModelPort's Python package: the API's schemas (``modelport.schemas``), shared by the server and the client."""
