"""The headless CLI in a subprocess, as a user runs it: for the tests that drive `flash-tui`.

No tests here; test modules import it (`from headless import CLI, run_cli`), as pytest puts
this directory on `sys.path`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# `flash-tui` with this interpreter, whether or not the console script is installed.
CLI = [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())"]

# Subcommands that take the project as their PATH argument, or no project at all.
_PATH_COMMANDS = frozenset({"build", "scan"})
_NO_PROJECT = frozenset({"cloud"})


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    project: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 180.0,
) -> subprocess.CompletedProcess[str]:
    """`flash-tui ARGS` with no stdin, its output captured as text; with `project`, passed the
    way the subcommand takes it (`build`/`scan`: PATH, `cloud`: not at all, others: --project)."""
    command = [*CLI, *args]
    if project is not None and args[0] in _PATH_COMMANDS:
        command.append(str(project))
    elif project is not None and args[0] not in _NO_PROJECT:
        command += ["--project", str(project)]
    return subprocess.run(
        command,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
