"""Endpoint tables on RunPod after a deploy killed between the endpoint saves and the table
writes: the plan shows each caller's table out of date (by endpoint name, never a URL or key),
the next deploy rewrites them, and then everything is in sync.

A real `flash-tui deploy` subprocess is SIGKILLed once the contract fake has received its first
table write (held by the fake and refused, so nothing of it lands)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from fakes.runpod import FakeRunPod
from headless import run_cli, start_cli
from projectfiles import copy_example
from waiting import wait_for


def _environ(fake: FakeRunPod, home: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    environ.update(
        {"HOME": str(home), "COLUMNS": "200", "FLASH_RUNPOD_HEALTH_WAIT": "0", **fake.env()}
    )
    return environ


def _kill_at_first_table_write(fake: FakeRunPod, project: Path, environ: dict[str, str]) -> str:
    """Run a full deploy and SIGKILL it when its first saveTemplate (a table) reaches the fake;
    returns what it printed."""
    mark = len(fake.graphql_calls)
    # Held long enough for the kill, then refused: the killed write must not land late.
    fake.fail_next("saveTemplate", status=503, delay=30.0, times=100)
    deploy = start_cli(
        ["deploy", "--yes", "--target", "runpod"],
        environ,
        project=project,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: any(c.operation == "saveTemplate" for c in fake.graphql_calls[mark:]),
            120,
            "the deploy's first table write",
        )
        saves = [c.operation for c in fake.graphql_calls[mark:]].count("saveEndpoint")
        assert saves >= 2  # the new endpoints are saved: the tables were all that was left
    finally:
        os.killpg(deploy.pid, signal.SIGKILL)
        out, _ = deploy.communicate(timeout=30)
        fake.clear_faults()
    return out


def test_a_deploy_killed_before_its_table_writes_is_drift_until_the_next_deploy(
    tmp_path: Path,
) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    with FakeRunPod(tmp_path / "fake", data_plane=False) as fake:
        environ = _environ(fake, tmp_path / "home")
        outputs: list[str] = []

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            done = run_cli([*args, "--target", "runpod"], environ, project=project, timeout=300)
            outputs.extend([done.stdout, done.stderr])
            return done

        first = cli("deploy", "gateway", "--yes")
        assert first.returncode == 0, first.stdout + first.stderr
        outputs.append(_kill_at_first_table_write(fake, project, environ))

        built = json.loads((project / ".flash" / ".build" / "flash_manifest.json").read_text())
        names = sorted(built["resources"])
        callers = sorted(n for n, r in built["resources"].items() if r["makes_remote_calls"])
        assert sorted(e.name for e in fake.endpoints()) == names  # all saved, tables not
        assert callers and callers != names

        plan = cli("plan", "--json")
        assert plan.returncode == 0, plan.stderr
        items = {i["name"]: i for i in json.loads(plan.stdout)["items"]}
        assert sorted(n for n, i in items.items() if i["action"] == "update") == callers
        for name in callers:
            others = ", ".join(n for n in names if n != name)
            assert items[name]["changes"] == [
                {
                    "field": "endpoint_table",
                    "deployed": f"out of date: {others}",
                    "local": "up to date",
                }
            ]
            assert f"endpoint table out of date: {others}" in items[name]["reasons"]
        shown = cli("plan")
        assert "endpoint table out of date" in shown.stdout, shown.stdout
        status = cli("status", "--json")
        rows = {r["name"]: r for r in json.loads(status.stdout)["endpoints"]}
        assert sorted(n for n, r in rows.items() if r["drift"] == "drifted") == callers

        done = cli("deploy", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        again = json.loads(cli("plan", "--json").stdout)
        assert {i["action"] for i in again["items"]} == {"unchanged"}, again
        endpoints = {e.name: e for e in fake.endpoints()}
        for name, text in fake.endpoint_tables().items():
            if name not in callers:
                assert text is None, name
                continue
            table = json.loads(text)["endpoints"]
            assert sorted(table) == [n for n in names if n != name]
            assert {n: t["key"] for n, t in table.items()} == {n: endpoints[n].aiKey for n in table}

        assert cli("undeploy", "--all", "--yes").returncode == 0
        assert fake.endpoints() == [] and fake.templates() == []
        keys = [fake.api_key, *(e.aiKey for e in endpoints.values() if e.aiKey)]
        assert not [k for k in keys for o in outputs if k in o]
