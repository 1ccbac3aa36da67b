"""Endpoint roles on the local cloud, and what each role's worker is told at start.

- `endpoint`: deployed by the engine itself (direct mode); finds the app's other endpoints in
  the endpoint table file the supervisor writes.
- `mothership`: deployed by `deploy --mothership`; provisions the others. Its worker gets the
  service's URL and a credential scoped to its app and environment (`scopes`), never the
  service's token, and `FLASH_IS_MOTHERSHIP=true`.
- `child`: deployed by a mothership; finds the others through the mothership's `/manifest`
  (`FLASH_ENDPOINTS_URL`, with the mothership's key), not through the table file, and knows
  who provisioned it (`FLASH_MOTHERSHIP_ID`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.app_environments import DEFAULT_ENVIRONMENT
from engine.localcloud.scopes import scoped_token

__all__ = ["CHILD", "ENDPOINT", "MOTHERSHIP", "ROLES", "DEFAULT_ENVIRONMENT", "worker_env"]

ENDPOINT = "endpoint"
MOTHERSHIP = "mothership"
CHILD = "child"
ROLES: frozenset[str] = frozenset({ENDPOINT, MOTHERSHIP, CHILD})


def worker_env(
    record: Mapping[str, Any],
    *,
    service_url: str | None,
    master_token: str,
    mothership: Mapping[str, Any] | None,
    mothership_key: str | None,
) -> dict[str, str]:
    """The variables a worker of `record`'s role gets on top of every worker's ones.

    `mothership` / `mothership_key`: the record and key of a child's mothership.
    """
    role = record.get("role") or ENDPOINT
    environment = str(record.get("environment") or DEFAULT_ENVIRONMENT)
    if role == MOTHERSHIP:
        return {
            "FLASH_IS_MOTHERSHIP": "true",
            "FLASH_ENV": environment,
            "FLASH_BUILD_ID": str(record.get("build_id") or ""),
            "FLASH_STATE_URL": service_url or "",
            "FLASH_STATE_TOKEN": scoped_token(master_token, str(record["app"]), environment),
        }
    if role == CHILD:
        env = {
            "FLASH_ENV": environment,
            "FLASH_MOTHERSHIP_ID": str(record.get("mothership") or ""),
            # Its registry is the mothership's /manifest, not the table file.
            "FLASH_ENDPOINTS_FILE": "",
        }
        if mothership is not None and mothership.get("url"):
            env["FLASH_ENDPOINTS_URL"] = f"{mothership['url']}/manifest"
            env["FLASH_ENDPOINTS_TOKEN"] = mothership_key or ""
        return env
    return {}
