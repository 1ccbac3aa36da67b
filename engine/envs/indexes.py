"""The user's package-index settings, as uv options.

uv does not read pip's configuration, yet the user's pip settings say where packages come from
(a private index, a local wheel directory with a CPU build of torch): without them uv would ask
PyPI and, for torch, fetch a multi-GB CUDA build. pip's settings are read from its configuration
files in pip's order, a later one winning (global: `$XDG_CONFIG_DIRS/pip/pip.conf` and
`/etc/pip.conf`; user: `~/.pip/pip.conf` and `~/.config/pip/pip.conf`; site: `<prefix>/pip.conf`;
then `$PIP_CONFIG_FILE`), `[install]` over `[global]`, and then from the `PIP_*` variables, which
win as they do for pip: find-links, index-url, extra-index-url, no-index and constraint. The
files are parsed here rather than asked of `pip config list`: a deploy must not pay for starting
pip.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import platformdirs

__all__ = ["local_cpu_torch", "pip_config_files", "pip_settings", "uv_index_args"]

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


def pip_config_files(environ: Mapping[str, str], prefix: str = sys.prefix) -> list[Path]:
    """pip's configuration files in the order pip reads them (a later one wins)."""
    config_dirs = environ.get("XDG_CONFIG_DIRS") or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in config_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    home = Path(environ.get("HOME") or Path.home())
    files.append(home / ".pip" / "pip.conf")
    config_home = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    files.append(Path(config_home) / "pip" / "pip.conf")
    if sys.platform == "darwin":  # pip's user directory there
        files.append(Path(platformdirs.user_config_dir("pip", appauthor=False)) / "pip.conf")
    files.append(Path(prefix) / "pip.conf")
    extra = environ.get("PIP_CONFIG_FILE")
    if extra:
        if extra == os.devnull:  # pip: no configuration file at all
            return []
        files.append(Path(extra))
    return files


def _read_config(path: Path) -> dict[str, str]:
    """The index options of one pip configuration file (`[install]` over `[global]`)."""
    import configparser  # here: most machines have no pip configuration file

    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}  # pip would refuse it too; the variables still apply
    found: dict[str, str] = {}
    for section in ("global", "install"):
        if parser.has_section(section):
            for option in _OPTIONS:
                if parser.has_option(section, option):
                    found[option] = " ".join(parser.get(section, option).split())
    return found


def pip_settings(environ: Mapping[str, str], prefix: str = sys.prefix) -> dict[str, str]:
    """pip's index settings: its configuration files, then the `PIP_*` variables over them."""
    settings: dict[str, str] = {}
    for path in pip_config_files(environ, prefix):
        if path.is_file():
            settings.update(_read_config(path))
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


def _local_dir(location: str) -> Path | None:
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif "://" in location:
        return None
    path = Path(location).expanduser()
    return path if path.is_dir() else None


def local_cpu_torch(settings: Mapping[str, str]) -> str | None:
    """`torch==V+cpu` when a find-links directory holds a CPU build of torch this interpreter
    can install (the newest), else None: GPU images' torch, as this machine can run it."""
    # Here, not at the top: only a project whose GPU endpoints get torch looks for a wheel.
    from packaging.tags import sys_tags
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    supported = set(sys_tags())
    best = None
    for location in (settings.get("find-links") or "").split():
        directory = _local_dir(location)
        if directory is None:
            continue
        for wheel in directory.glob("torch-*.whl"):
            try:
                name, version, _build, tags = parse_wheel_filename(wheel.name)
            except InvalidWheelFilename:
                continue
            if name != "torch" or version.local != "cpu" or not tags & supported:
                continue
            if best is None or version > best:
                best = version
    return f"torch=={best}" if best is not None else None
