"""A headless command imports what it runs on, not every command's engine (start-up time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from headless import python_json
from projectfiles import copy_example

_PROBE = """
import json, sys
from engine import cli
code = cli.main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _modules_after(args: list[str]) -> tuple[int, set[str]]:
    last = python_json(_PROBE, args=args)
    return last["code"], set(last["modules"])


def test_scan_imports_no_other_command(tmp_path: Path) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    code, modules = _modules_after(["scan", "--json", str(project)])
    assert code == 0
    assert "engine.cli.scan" in modules
    others = {m for m in modules if m.startswith("engine.cli.")} - {"engine.cli.scan"}
    assert others <= {"engine.cli.arguments"}, others
    # nothing of the TUI or the dev server
    assert not {"textual", "engine.dev.server", "fastapi"} & modules


def test_deploy_imports_nothing_only_invoke_or_isolation_need(
    tmp_path: Path, localcloud_home: Path
) -> None:
    """A warm `deploy --yes` pays for every module it imports: not the job serialisation
    (cloudpickle) of `invoke`, nor the sandbox probing (ctypes) of `cloud status`, nor httpx's
    own command line (click, pygments) that its `__init__` imports when they are installed."""
    project = copy_example("quickstart", tmp_path / "quickstart")
    code, modules = _modules_after(["deploy", "--yes", "--json", "--project", str(project)])
    assert code == 0
    assert "engine.cli.deploy" in modules
    unneeded = {"engine.invoke", "runtime.serialization", "cloudpickle", "runtime.sandbox"}
    unneeded.add("ctypes")
    unneeded |= {"click", "pygments"}
    # The local cloud is plain HTTP on 127.0.0.1 (engine.localcloud.transport): no httpcore
    # (nor its anyio; h11 frames the bytes), and no TLS context with the CA bundle (certifi).
    unneeded |= {"httpcore", "anyio", "certifi"}
    assert "httpx" in modules
    assert not unneeded & modules, unneeded & modules


def test_warm_deploy_needs_no_resource_models(tmp_path: Path, localcloud_home: Path) -> None:
    """Once deployed, an unchanged project's `deploy --yes` takes its config hashes from the
    on-disk memo (engine.scan.confighashes): the SDK's pydantic resource models stay unloaded."""
    project = copy_example("quickstart", tmp_path / "quickstart")
    args = ["deploy", "--yes", "--json", "--project", str(project)]
    code, modules = _modules_after(args)
    assert code == 0
    assert "runtime.resources" in modules  # the first scan worked the hashes out
    code, modules = _modules_after(args)
    assert code == 0
    assert "runtime.resources" not in modules
    assert "runtime.resourcekinds" in modules
    # Nor what only building, vendoring or making environments needs: the quickstart has no
    # requirements and no pyproject.toml, so nothing parses one.
    unneeded = {"packaging.requirements", "packaging.tags", "tomllib", "configparser"}
    # Finding the running cloud reads its state file and /proc: no psutil, and its database
    # (sqlite3) is the service's business.
    unneeded |= {"psutil", "sqlite3"}
    # Nor the other operations' machinery (status, logs).
    unneeded |= {"engine.status_operation", "engine.logs"}
    assert not unneeded & modules, unneeded & modules


def test_resource_kinds_restate_the_models() -> None:
    """runtime.resourcekinds (read without the models) says what each model class says."""
    from runtime import resourcekinds, resources

    for cls in resources._CLASSES:
        kind = resourcekinds.RESOURCE_TYPES[cls.__name__]
        assert (kind.is_load_balanced, kind.is_live, kind.is_cpu) == (
            cls.is_load_balanced,
            cls.is_live,
            cls.is_cpu,
        )
    assert set(resourcekinds.RESOURCE_TYPES) == {cls.__name__ for cls in resources._CLASSES}


def test_help_still_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from flash_tui.main import main; main(['--help'])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    from engine.cli import COMMANDS

    for name in COMMANDS:
        assert name in out.stdout


def test_sdk_names_resolve_whatever_was_imported_first() -> None:
    # runtime.endpoint imports the submodule runtime.remote; the package's `remote` must stay
    # the decorator (user code does `from tetra_rp import remote`).
    code = (
        "import runtime.confighash, sys; assert 'runtime.resources' not in sys.modules; "
        "import runtime.endpoint; from runtime import remote, Endpoint, LiveServerless, GpuGroup; "
        "import runtime; assert callable(remote) and runtime.remote is remote; "
        "print(remote.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "runtime.remote"


def test_an_in_process_call_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    """Only a command that is its process's own sets its imports aside from the collector: a
    caller in the same process (a test, a host program) keeps its heap collectable and its
    collector switched as it had it."""
    project = copy_example("quickstart", tmp_path / "quickstart")
    probe = """
import gc, json, sys
from engine import cli
gc.disable()
in_process = cli.main(["scan", "--json", sys.argv[1]])
after_call = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
gc.enable()
own = cli.main(["scan", "--json", sys.argv[1]], whole_process=True)
sys.stdout.flush()
print(json.dumps({"codes": [in_process, own], "after_call": after_call,
                  "frozen_after_own": gc.get_freeze_count(), "enabled": gc.isenabled()}))
"""
    last = python_json(probe, args=[str(project)])
    assert last["codes"] == [0, 0]
    assert last["after_call"] == {"enabled": False, "frozen": 0}
    assert last["frozen_after_own"] > 0 and last["enabled"]
