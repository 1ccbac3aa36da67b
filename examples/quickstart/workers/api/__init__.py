"""Live load-balanced endpoint: small HTTP API."""
