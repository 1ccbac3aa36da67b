"""The embedded local cloud: a control-plane service on 127.0.0.1 that runs each
deployed endpoint as a supervised worker process.

- `python -m engine.localcloud`: the service (`service.create_app` + `supervisor.Supervisor`);
- `discovery`: find / start (detached) / stop the service of a flash-tui home;
- `client.CloudClient`: async client of its HTTP API, speaking `wire`'s pydantic models;
- `provider.LocalCloudProvider`: the engine's provider for it (`engine.provider.get_provider`);
- `store.Store`: its SQLite database; `logfiles`: per-endpoint log files.
"""

from engine.localcloud.discovery import CloudError, CloudInfo, ensure_cloud, stop_cloud

__all__ = ["CloudError", "CloudInfo", "ensure_cloud", "stop_cloud"]
