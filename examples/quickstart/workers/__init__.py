"""Worker endpoints of the quickstart app: one package per endpoint, config in `endpoint.py`."""
