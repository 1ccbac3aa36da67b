"""The supervisor's tunables (crash backoff and window, readiness, monitoring) on top of the
workers' own, with their `FLASH_LOCALCLOUD_*` overrides. Its own module so the supervisor and its
crash handling both read it without importing each other."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from engine.localcloud.workerpool import pool_enabled
from engine.localcloud.workers import WorkerSettings

__all__ = ["SupervisorSettings"]


@dataclass
class SupervisorSettings(WorkerSettings):
    """Tunables; the service reads overrides from `FLASH_LOCALCLOUD_*` environment variables
    (and `FLASH_WORKER_POOL=off`, see `workerpool`)."""

    backoff_base: float = 0.5
    backoff_max: float = 10.0
    crash_limit: int = 5
    crash_window: float = 60.0
    ready_timeout: float = 30.0
    monitor_interval: float = 0.1
    # Endpoints a deploy starts at a time: a cancelled deploy leaves the rest unstarted.
    deploy_concurrency: int = 8
    # Seconds a worker replaced by an update keeps serving after the switch to the new one.
    drain_grace: float = 2.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SupervisorSettings:
        """Defaults overridden by `FLASH_LOCALCLOUD_<FIELD>` (upper case) when set."""
        env = os.environ if environ is None else environ
        settings = cls()
        for name, current in vars(cls()).items():
            raw = env.get(f"FLASH_LOCALCLOUD_{name.upper()}", "").strip()
            if raw:
                with contextlib.suppress(ValueError):
                    setattr(settings, name, type(current)(float(raw)))
        settings.worker_pool = settings.worker_pool and pool_enabled(env)
        return settings
