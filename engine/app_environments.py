"""An app's environments on a target: the typed listing the TUI's picker shows, and the rule
every environment name follows (the CLI's `--env` and the picker's input alike)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_ENVIRONMENT",
    "DIRECT_ENVIRONMENT",
    "AppEnvironment",
    "environment_app",
    "environment_name_problem",
    "picked_session",
]

# Where a deploy goes without `--env` (RunPod, and a mothership on the local cloud).
DEFAULT_ENVIRONMENT = "production"
# The environment direct deploys to the local cloud record (no `--env`).
DIRECT_ENVIRONMENT = "local"

# The local cloud's rule for every name it keeps (`service.NAME_PATTERN`): names become path
# components and URL segments there, and RunPod takes the same names.
_MAX_NAME = 128
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{_MAX_NAME - 1}}}$")


@dataclass(frozen=True)
class AppEnvironment:
    """One environment of an app on a target; `mothership`: the name of the mothership
    deployed to it, None when it has none (or the target does not say)."""

    name: str
    mothership: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "mothership": self.mothership}


def environment_app(app: str, env: str | None) -> str:
    """The local cloud's app holding `app`'s endpoints of environment `env`: `app` itself for
    direct mode (None or `local`), else `{app}.{env}` (the store's `app_environments` reads
    the same rule in SQL)."""
    return app if env in (None, DIRECT_ENVIRONMENT) else f"{app}.{env}"


def environment_name_problem(name: str, app: str | None = None) -> str | None:
    """Why `name` cannot be an environment's name (a sentence naming it), None when it can;
    with `app` (an app key on the local cloud) also when the cloud app it becomes is too long."""
    if not name:
        return "an environment needs a name"
    if _NAME.match(name):
        return None if app is None else _cloud_app_problem(name, app)
    if len(name) > _MAX_NAME:
        return (
            f"environment name {name[:20]!r}… is too long "
            f"({len(name)} characters; at most {_MAX_NAME})"
        )
    if not name[0].isascii() or not name[0].isalnum():
        return f"environment name {name!r} must start with a letter or a digit"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "_.-"))})
    shown = ", ".join(repr(c) for c in bad)
    return f"environment name {name!r} has {shown}: use letters, digits, '_', '.' and '-' only"


def _cloud_app_problem(name: str, app: str) -> str | None:
    # The cloud keeps an environment as one name, `{app}.{env}`, under the same rule.
    kept = environment_app(app, name)
    if len(kept) <= _MAX_NAME:
        return None
    shown = f"{name[:20]!r}…" if len(name) > 20 else repr(name)
    return (
        f"environment name {shown} is too long for app {app!r}: the local cloud keeps it as "
        f"the app's name, '.' and the environment's ({len(kept)} characters; at most "
        f"{_MAX_NAME}, so at most {max(0, _MAX_NAME - len(app) - 1)} for the environment)"
    )


def picked_session(target: str, name: str, mothership: bool) -> tuple[str | None, bool]:
    """The `(env, mothership)` a session works on once environment `name` and a deploy mode
    are picked: as picked on RunPod; on the local cloud `local` is direct mode (no `--env`)
    and every other environment a mothership's (a direct deploy records no other there)."""
    if target == "runpod":
        return name, mothership
    if name == DIRECT_ENVIRONMENT:
        return None, False
    return name, True
