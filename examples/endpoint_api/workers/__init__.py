"""Queue-based endpoints of the endpoint_api app."""
