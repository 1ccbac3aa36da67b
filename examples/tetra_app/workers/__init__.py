"""Worker endpoints of the tetra_app: one package per endpoint, config in `endpoint.py`."""
