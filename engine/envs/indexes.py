"""The user's package-index settings, as uv options.

uv does not read pip's configuration, yet the user's pip settings say where packages come from
(a private index, a local wheel directory with a CPU build of torch): without them uv would ask
PyPI and, for torch, fetch a multi-GB CUDA build. pip's settings are taken from
`pip config list` (its files: global, user, site) and then from the `PIP_*` variables, which
win as they do for pip: find-links, index-url, extra-index-url, no-index and constraint.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping

__all__ = ["pip_settings", "uv_index_args"]

# pip option -> (uv option, takes several values)
_OPTIONS: dict[str, tuple[str, bool]] = {
    "find-links": ("--find-links", True),
    "index-url": ("--index-url", False),
    "extra-index-url": ("--extra-index-url", True),
    "constraint": ("--constraint", True),
    "no-index": ("--no-index", False),
}
_FLAGS = frozenset({"no-index"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _parse_config(text: str) -> dict[str, str]:
    """`section.key='value'` lines of `pip config list`; a later section's value wins."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        option = key.rpartition(".")[2].strip()
        if option in _OPTIONS:
            found[option] = value.strip().strip("'\"")
    return found


def pip_settings(environ: Mapping[str, str], python: str = sys.executable) -> dict[str, str]:
    """pip's index settings: its config files, then the `PIP_*` variables over them."""
    settings: dict[str, str] = {}
    try:
        result = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=30,
            env={k: v for k, v in environ.items() if not k.startswith("PIP_")},
        )
        if result.returncode == 0:
            settings.update(_parse_config(result.stdout))
    except (OSError, subprocess.TimeoutExpired):
        pass  # no pip here: the variables alone
    for option in _OPTIONS:
        value = environ.get("PIP_" + option.upper().replace("-", "_"))
        if value is not None:
            settings[option] = value
    return settings


def uv_index_args(settings: Mapping[str, str]) -> list[str]:
    """uv command-line options for pip's `settings` (values split on whitespace, as pip does)."""
    args: list[str] = []
    for option, (flag, several) in _OPTIONS.items():
        value = settings.get(option)
        if value is None:
            continue
        if option in _FLAGS:
            if value.strip().lower() not in _FALSE:
                args.append(flag)
            continue
        values = value.split() if several else [value.strip()]
        for item in values:
            if item:
                args += [flag, item]
    return args
