"""Where the RunPod target is and which key reaches it; redaction of that key.

The key comes from `RUNPOD_API_KEY` (when not blank), else from `~/.runpod/config.toml`
`[default] api_key` (the file `runpod config` and `flash login` write). The URLs of the four
planes can be overridden by environment variables, which is how the tests point everything at
the contract fake. The key is never part of a repr, and `redact` removes it from any text.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runtime.runpod_endpoints import DEFAULT_API_BASE, DEFAULT_ENDPOINT_BASE, DEFAULT_LB_URL, lb_url

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_ENDPOINT_BASE",
    "DEFAULT_LB_URL",
    "DEFAULT_REST_BASE",
    "ConfigError",
    "RunPodConfig",
    "credentials_path",
    "load_config",
    "redact",
]

DEFAULT_REST_BASE = "https://rest.runpod.io/v1"

_ENV_KEY = "RUNPOD_API_KEY"
_REDACTED = "<redacted>"


class ConfigError(Exception):
    """The RunPod target cannot be configured; the message says where the key was looked for."""


@dataclass(frozen=True)
class RunPodConfig:
    """The account key (never in `repr`), where it came from, and the base URLs."""

    api_key: str = field(repr=False)
    key_source: str
    api_base: str = DEFAULT_API_BASE
    endpoint_base: str = DEFAULT_ENDPOINT_BASE
    rest_base: str = DEFAULT_REST_BASE
    lb_url_template: str = DEFAULT_LB_URL

    @property
    def graphql_url(self) -> str:
        """The GraphQL endpoint, `{api base}/graphql`."""
        return self.api_base.rstrip("/") + "/graphql"

    def queue_url(self, endpoint_id: str) -> str:
        """Base URL of a queue-based endpoint's job API."""
        return f"{self.endpoint_base.rstrip('/')}/{endpoint_id}"

    def lb_url(self, endpoint_id: str) -> str:
        """Base URL of a load-balanced endpoint."""
        return lb_url(self.lb_url_template, endpoint_id)

    def redact(self, text: str) -> str:
        """`text` with the account key replaced (also when it was cut or percent-encoded)."""
        return redact(text, self.api_key)


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every non-trivial secret in it replaced by `<redacted>`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    return text


def credentials_path(home: Path | None = None) -> Path:
    """`~/.runpod/config.toml`, the credentials file of RunPod's tools."""
    return (home or Path.home()) / ".runpod" / "config.toml"


def _where_looked(path: Path) -> str:
    return f"{_ENV_KEY} (not set) and {path} ([default] api_key)"


def _key_from_file(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        section = data.get("default")
        key = section.get("api_key") if isinstance(section, dict) else None
        return key.strip() if isinstance(key, str) and key.strip() else None
    return _key_from_toml_text(text)


def _key_from_toml_text(text: str) -> str | None:
    # Python 3.10 has no tomllib: the file is two lines written by RunPod's tools.
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.strip("[] ")
        elif section == "default":
            match = re.match(r"api_key\s*=\s*[\"']([^\"']*)[\"']", line)
            if match and match.group(1).strip():
                return match.group(1).strip()
    return None


def load_config(environ: Mapping[str, str] | None = None, home: Path | None = None) -> RunPodConfig:
    """The target's config from the environment (default `os.environ`) and the credentials file."""
    env = os.environ if environ is None else environ
    path = credentials_path(home)
    key = (env.get(_ENV_KEY) or "").strip()
    source = _ENV_KEY
    if not key:
        key = _key_from_file(path) or ""
        source = f"{path} [default] api_key"
    if not key:
        raise ConfigError(f"no RunPod API key: looked in {_where_looked(path)}")
    return RunPodConfig(
        api_key=key,
        key_source=source,
        api_base=(env.get("RUNPOD_API_BASE_URL") or DEFAULT_API_BASE).rstrip("/"),
        endpoint_base=(env.get("RUNPOD_ENDPOINT_BASE_URL") or DEFAULT_ENDPOINT_BASE).rstrip("/"),
        rest_base=(env.get("RUNPOD_REST_API_URL") or DEFAULT_REST_BASE).rstrip("/"),
        lb_url_template=env.get("FLASH_RUNPOD_LB_URL") or DEFAULT_LB_URL,
    )
