"""The RunPod provider against the contract fake's control plane (`tests/fakes/runpod.py`):
deploy in upstream's call order with templates and state in the build manifest, a plan with
no false drift, a one-field change that updates exactly one endpoint, a change made in the
console shown as drift, orphans, cost marks, partial deploys completed by the next one, and
undeploy leaving no endpoint and no template behind.

These run without the fake's data plane (no workers): `health_wait=0` tells the provider not to
wait for health, which `test_runpod_e2e.py` covers with real workers.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.runpod import FakeRunPod
from projectfiles import copy_example

from engine.operations import Engine, OpError, OpEvent
from engine.runpod.provider import RunPodProvider


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeRunPod]:
    with FakeRunPod(tmp_path / "fake", data_plane=False) as running:
        yield running


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_example("quickstart", tmp_path / "quickstart")


def _engine(project: Path, fake: FakeRunPod, env: str | None = None) -> Engine:
    provider = RunPodProvider(env=env, environ=fake.env(), health_wait=0)
    return Engine(project, provider)


def _ops(fake: FakeRunPod, since: int = 0) -> list[str]:
    return [c.operation or "" for c in fake.graphql_calls[since:]]


def _set_workers_max(project: Path, name: str, value: int) -> None:
    path = project / "main.py"
    text = path.read_text()
    assert 'name="gateway"' in text and name == "gateway"
    path.write_text(re.sub(r"workersMax=\d+", f"workersMax={value}", text, count=1))


async def test_deploy_then_plan_in_sync_then_undeploy_leaves_nothing(
    project: Path, fake: FakeRunPod
) -> None:
    async with _engine(project, fake) as engine:
        plan = await engine.plan()
        names = plan.names("create")
        assert names and not plan.names("update", "delete")
        report = await engine.deploy()
        assert report.ok, report.outcome
        ops = _ops(fake)
        # upstream's order: app + env, upload, build activated, then the endpoints
        order = [
            "createFlashApp",
            "createFlashEnvironment",
            "prepareFlashArtifactUpload",
            "finalizeFlashArtifactUpload",
            "deployBuildToEnvironment",
            "saveEndpoint",
        ]
        positions = [ops.index(op) for op in order]
        assert positions == sorted(positions), ops
        endpoints = fake.endpoints()
        assert sorted(e.name for e in endpoints) == sorted(names)
        for endpoint in endpoints:
            assert endpoint.workersStandby == endpoint.workersMin  # scales to zero when min 0
        templates = {t.id: t for t in fake.templates()}
        for endpoint in endpoints:
            env = templates[endpoint.templateId].env
            assert env["FLASH_RESOURCE_NAME"] == endpoint.name
            assert env["FLASH_ENV"] == "production" and env["_FLASH_SOURCE_FINGERPRINT"]
            assert (env.get("FLASH_ENDPOINT_TYPE") == "lb") == (endpoint.type == "LB")
            assert fake.api_key not in env.values()  # the account key never goes to a worker
        # the state lives in the environment's active build manifest
        (environment,) = fake.environments()
        build = next(b for b in fake.builds() if b.id == environment.activeBuildId)
        assert sorted(build.manifest["resources_endpoints"]) == sorted(names)
        assert {e["endpoint_id"] for e in build.manifest["deployments"].values()} == {
            e.id for e in endpoints
        }

        again = await engine.plan()
        assert again.names("unchanged") == sorted(names), again.to_dict()  # no false drift

        undo = await engine.undeploy()
        assert undo.ok, undo.outcome
    assert fake.endpoints() == []
    assert fake.templates() == []


async def test_one_field_change_updates_exactly_that_endpoint(
    project: Path, fake: FakeRunPod
) -> None:
    async with _engine(project, fake) as engine:
        assert (await engine.deploy()).ok
        before = {e.name: e for e in fake.endpoints()}
        _set_workers_max(project, "gateway", 5)
        plan = await engine.plan()
        assert plan.names("update") == ["gateway"]
        (change,) = plan.item("gateway").changes
        assert (change.field, change.deployed, change.local) == ("workersMax", 2, 5)
        mark = len(fake.graphql_calls)
        assert (await engine.deploy()).ok
        saved = [c for c in fake.graphql_calls[mark:] if c.operation == "saveEndpoint"]
        assert [c.variables["input"]["id"] for c in saved] == [before["gateway"].id]
        after = {e.name: e for e in fake.endpoints()}
        assert after["gateway"].workersMax == 5 and after["gateway"].id == before["gateway"].id
        assert all(after[n].version == before[n].version for n in before if n != "gateway")
        assert (await engine.plan()).names("update") == []
        await engine.undeploy()


async def test_each_caller_gets_its_table_of_the_others(project: Path, fake: FakeRunPod) -> None:
    """Workers on RunPod find each other only through their template env: once every endpoint
    exists, the template of each endpoint whose code calls another (`makes_remote_calls`) holds
    the others' URLs and endpoint-scoped keys, and no other template holds one; a table is
    rewritten only when it changed, and it is no drift."""
    async with _engine(project, fake) as engine:
        assert (await engine.deploy(["cpu_worker"])).ok
        (alone,) = fake.templates()
        assert "FLASH_ENDPOINTS" not in alone.env  # no other endpoint: no table
        mark = len(fake.graphql_calls)
        assert (await engine.deploy()).ok
        built = json.loads((project / ".flash" / ".build" / "flash_manifest.json").read_text())
        callers = {n for n, r in built["resources"].items() if r["makes_remote_calls"]}
        assert callers and callers != set(built["resources"])  # the example has both kinds
        endpoints = {e.name: e for e in fake.endpoints()}
        provider = engine.provider
        urls = {n: (await provider.target(engine.app, n)).base_url for n in endpoints}
        for name, text in fake.endpoint_tables().items():
            if name not in callers:
                assert text is None, name
                continue
            assert json.loads(text)["endpoints"] == {
                other: {"url": urls[other], "key": endpoints[other].aiKey}
                for other in endpoints
                if other != name
            }
            assert fake.api_key not in text
        # the creates first, then one table per caller: after every saveEndpoint
        ops = _ops(fake, mark)
        tables = [i for i, op in enumerate(ops) if op == "saveTemplate"]
        assert len(tables) == len(callers)
        assert min(tables) > max(i for i, op in enumerate(ops) if op == "saveEndpoint")
        assert (await engine.plan()).names("unchanged") == sorted(endpoints)  # no drift

        _set_workers_max(project, "gateway", 5)
        mark = len(fake.graphql_calls)
        assert (await engine.deploy()).ok
        saved = [c for c in fake.graphql_calls[mark:] if c.operation == "saveTemplate"]
        # gateway's own update rewrites its template; no other table changed
        assert [c.variables["input"]["id"] for c in saved] == [endpoints["gateway"].templateId]

        assert (await engine.undeploy(["gpu_worker"])).ok  # the callers forget it
        for template in fake.templates():
            if "FLASH_ENDPOINTS" in template.env:
                table = json.loads(template.env["FLASH_ENDPOINTS"])["endpoints"]
                assert "gpu_worker" not in table
                assert template.env["FLASH_RESOURCE_NAME"] not in table
        await engine.undeploy()
    assert fake.endpoints() == [] and fake.templates() == []


async def test_console_change_shows_as_drift_and_orphans(project: Path, fake: FakeRunPod) -> None:
    async with _engine(project, fake) as engine:
        assert (await engine.deploy()).ok
        gateway = next(e for e in fake.endpoints() if e.name == "gateway")
        fake.edit_endpoint(gateway.id, workersMax=7, idleTimeout=60)
        plan = await engine.plan()
        assert plan.names("update") == ["gateway"]
        fields = {c.field: (c.deployed, c.local) for c in plan.item("gateway").changes}
        assert fields == {"workersMax": (7, 2), "idleTimeout": (60, 5)}
        statuses = {s.name: s for s in await engine.status(probe=False)}
        assert statuses["gateway"].drift == "drifted"

        # an endpoint removed from the code is orphaned, and deleted by the next full deploy
        main = project / "main.py"
        main.write_text(main.read_text().split("@remote(gateway_config")[0])
        statuses = {s.name: s for s in await engine.status(probe=False)}
        assert statuses["gateway"].drift == "orphaned"
        plan = await engine.plan()
        assert plan.names("delete") == ["gateway"]
        assert (await engine.deploy()).ok
        assert "gateway" not in {e.name for e in fake.endpoints()}
        assert gateway.templateId not in {t.id for t in fake.templates()}
        await engine.undeploy()
    assert fake.templates() == []


async def test_environments_are_separate(project: Path, fake: FakeRunPod) -> None:
    async with _engine(project, fake, env="staging") as staging:
        assert (await staging.deploy(["gateway"])).ok
    async with _engine(project, fake) as production:
        assert (await production.plan()).names("create") == (await production.plan()).names(
            "create"
        )
        assert "gateway" in (await production.plan()).names("create")
        assert [s.name for s in await production.status(probe=False) if s.deployed] == []
    async with _engine(project, fake, env="staging") as staging:
        assert [s.name for s in await staging.status(probe=False) if s.deployed] == ["gateway"]
        await staging.undeploy()


async def test_cost_marks_endpoints_that_never_scale_to_zero(
    project: Path, fake: FakeRunPod
) -> None:
    main = project / "main.py"
    main.write_text(main.read_text().replace("workersMin=0", "workersMin=1", 1))
    async with _engine(project, fake) as engine:
        plan = await engine.plan()
    notes = {i.name: r for i in plan.items for r in i.reasons if "never scales to zero" in r}
    # gateway (now) and api (in the example) keep a worker; the others scale to zero
    assert sorted(notes) == ["api", "gateway"], plan.to_dict()
    # the prices are the API's: cpu3c-2-4 from cpuFlavors, the GPU pools' from gpuTypes
    for note in notes.values():
        assert re.search(r"workersMin 1\): \$\d+\.\d\d/h", note), note


async def test_failed_create_is_completed_by_the_next_deploy(
    project: Path, fake: FakeRunPod
) -> None:
    async with _engine(project, fake) as engine:
        fake.fail_next("saveEndpoint", status=503)
        report = await engine.deploy()
        assert not report.ok
        failed = [r.name for r in report.outcome.failed()]
        assert len(failed) == 1 and "not retried" in (report.outcome.failed()[0].error or "")
        created = sorted(e.name for e in fake.endpoints())
        plan = await engine.plan()
        assert plan.names("create") == failed  # the record is consistent: only that one left
        assert sorted(plan.names("unchanged")) == created
        assert (await engine.deploy()).ok
        assert len(fake.endpoints()) == len(created) + 1
        await engine.undeploy()
    assert fake.endpoints() == [] and fake.templates() == []


async def test_unrecorded_endpoint_is_adopted_not_duplicated(
    project: Path, fake: FakeRunPod
) -> None:
    """A deploy killed after saveEndpoint but before the state was written: the endpoint is
    found by its environment id, planned as an update and updated in place."""
    async with _engine(project, fake) as engine:
        assert (await engine.deploy(["gateway"])).ok
        (environment,) = fake.environments()
        provider = engine.provider
        assert isinstance(provider, RunPodProvider)
        # the active build's manifest as a killed deploy left it: no record of the endpoint
        await provider.api.update_manifest(environment.activeBuildId, {"resources": {}})
        plan = await engine.plan()
        assert plan.names("update") == ["gateway"], plan.to_dict()
        assert plan.names("create") == sorted(
            n for n in plan.names("create", "update") if n != "gateway"
        )
        mark = len(fake.endpoints())
        await engine.deploy(["gateway"])
        assert len(fake.endpoints()) == mark == 1
        await engine.undeploy()
    assert fake.endpoints() == [] and fake.templates() == []


async def test_rejected_key_names_its_source(project: Path, fake: FakeRunPod) -> None:
    env = {**fake.env(), "RUNPOD_API_KEY": "rpa_WRONG_KEY_0000"}
    provider = RunPodProvider(environ=env, health_wait=0)
    async with Engine(project, provider) as engine:
        with pytest.raises(OpError) as caught:
            await engine.plan()
    assert "RUNPOD_API_KEY" in str(caught.value) and "401" in str(caught.value)
    assert "rpa_WRONG_KEY_0000" not in str(caught.value)


async def test_throttled_save_waits_for_retry_after(project: Path, fake: FakeRunPod) -> None:
    async with _engine(project, fake) as engine:
        fake.fail_next("saveEndpoint", status=429, retry_after=1)
        mark = len(fake.graphql_calls)
        report = await engine.deploy(["gateway"])
        assert report.ok, report.outcome
        saves = [c for c in fake.graphql_calls[mark:] if c.operation == "saveEndpoint"]
        assert len(saves) == 2  # refused once, then sent again: one endpoint, not two
        assert len(fake.endpoints()) == 1
        assert isinstance(engine.provider, RunPodProvider)
        assert engine.provider.api.client.waits == [1.0]
        await engine.undeploy()


async def test_a_template_written_before_its_endpoint_save_failed_keeps_its_new_env(
    project: Path, fake: FakeRunPod
) -> None:
    """An update writes the template, then saves the endpoint. When that save fails, the
    table written afterwards goes over the env just written, not over the env from before."""
    async with _engine(project, fake) as engine:
        assert (await engine.deploy()).ok
        shutil.rmtree(project / "workers" / "api")  # `api` goes: gateway's table changes
        main = project / "main.py"
        text = main.read_text()
        main.write_text(text.replace('name="gateway",', 'name="gateway", env={"MODE": "two"},'))
        fake.fail_next("saveEndpoint", graphql_error="the endpoint is being updated")
        report = await engine.deploy()
        assert [r.name for r in report.outcome.failed()] == ["gateway"]
        assert sorted(e.name for e in fake.endpoints()) == ["cpu_worker", "gateway", "gpu_worker"]
        gateway = next(e for e in fake.endpoints() if e.name == "gateway")
        (template,) = [t for t in fake.templates() if t.id == gateway.templateId]
        assert template.env.get("MODE") == "two"
        assert set(json.loads(template.env["FLASH_ENDPOINTS"])["endpoints"]) == {
            "cpu_worker",
            "gpu_worker",
        }
        assert (await engine.deploy()).ok  # the next deploy completes it
        await engine.undeploy()


async def test_5xx_on_queries_is_retried(project: Path, fake: FakeRunPod) -> None:
    async with _engine(project, fake) as engine:
        fake.fail_next("flashAppByName", status=502, times=2)
        plan = await engine.plan()
        assert len(plan.names("create")) == 4
        assert fake.pending_faults() == []


async def test_graphql_error_with_http_200_fails_that_endpoint_only(
    project: Path, fake: FakeRunPod
) -> None:
    async with _engine(project, fake) as engine:
        fake.fail_next("saveEndpoint", graphql_error="Invalid gpuIds for this region")
        report = await engine.deploy()
        (failed,) = report.outcome.failed()
        assert "Invalid gpuIds for this region" in (failed.error or "")
        assert len(fake.endpoints()) == 3
        assert (await engine.deploy()).ok  # the next deploy completes it
        await engine.undeploy()
    assert fake.endpoints() == [] and fake.templates() == []


async def test_a_twin_endpoint_is_orphaned_and_deleted(project: Path, fake: FakeRunPod) -> None:
    """A second endpoint of one name in the environment (a create applied after its client
    gave up) is shown as an orphan and deleted by the next full deploy."""
    from runtime.runpod_wire import EndpointInput, EnvVar, TemplateInput

    async with _engine(project, fake) as engine:
        assert (await engine.deploy(["gateway"])).ok
        provider = engine.provider
        assert isinstance(provider, RunPodProvider)
        (environment,) = fake.environments()
        template = TemplateInput(
            name="gateway-twin",
            imageName="runpod/flash-lb-cpu:py3.12-latest",
            env=[EnvVar(key="FLASH_RESOURCE_NAME", value="gateway")],
        )
        twin = await provider.api.save_endpoint(
            EndpointInput(
                name="gateway",
                template=template,
                instanceIds=["cpu3c-2-4"],
                type="LB",
                scalerType="REQUEST_COUNT",
                flashEnvironmentId=environment.id,
            )
        )
        plan = await engine.plan(["gateway", f"gateway~{twin.id}"])
        assert plan.names("delete") == [f"gateway~{twin.id}"]
        assert plan.names("unchanged") == ["gateway"]
        await engine.undeploy()
    assert fake.endpoints() == [] and fake.templates() == []


async def test_a_slow_query_times_out_and_is_retried(project: Path, fake: FakeRunPod) -> None:
    provider = RunPodProvider(environ=fake.env(), health_wait=0, request_timeout=1.0)
    async with Engine(project, provider) as engine:
        fake.fail_next("flashAppByName", delay=3.0)
        plan = await engine.plan()
    assert len(plan.names("create")) == 4
    asked = [c for c in fake.graphql_calls if c.operation == "flashAppByName"]
    assert len(asked) == 2  # the first timed out on our side, the second answered


async def test_a_record_that_cannot_be_written_is_an_error(project: Path, fake: FakeRunPod) -> None:
    """The endpoints exist, the record of them failed: the deploy says so (not a silent ok),
    and the next one finds and adopts them instead of creating twins."""
    async with _engine(project, fake) as engine:
        assert (await engine.deploy(["gateway"])).ok
        _set_workers_max(project, "gateway", 3)
        injected: list[bool] = []

        def once_endpoints_change(event: OpEvent) -> None:
            # the build and its carried-over record are in; the final write fails every retry
            if event.step == "endpoint" and not injected:
                injected.append(True)
                fake.fail_next("updateFlashBuildManifest", status=500, times=10)

        with pytest.raises(OpError, match="record was not written"):
            await engine.deploy(["gateway"], on_event=once_endpoints_change)
        assert injected
    async with _engine(project, fake) as engine:
        plan = await engine.plan(["gateway"])
        assert plan.names("update", "unchanged") == ["gateway"]
        assert len(fake.endpoints()) == 1


async def test_an_endpoint_adopted_after_a_killed_deploy_drifts_only_where_it_differs(
    project: Path, fake: FakeRunPod
) -> None:
    """A deploy killed after saveEndpoint leaves no record of the endpoint: its drift comes
    from the live endpoint read back against the code, so equal means in sync, and a change
    made in the console shows as exactly that field."""
    async with _engine(project, fake) as engine:
        killed: list[bool] = []

        def kill_after_save(event: OpEvent) -> None:
            # the build is in; the record write after the saves fails, as if the process died
            if event.step == "endpoint" and not killed:
                killed.append(True)
                fake.fail_next("updateFlashBuildManifest", graphql_error="killed")

        with pytest.raises(OpError, match="record was not written"):
            await engine.deploy(["gateway"], on_event=kill_after_save)
        assert not fake.pending_faults()
        (gateway,) = fake.endpoints()
    async with _engine(project, fake) as engine:
        plan = await engine.plan(["gateway"])
        assert plan.names("unchanged") == ["gateway"], plan.to_dict()
        assert plan.item("gateway").drift.state == "in_sync", plan.to_dict()
        fake.edit_endpoint(gateway.id, workersMax=4)
        plan = await engine.plan(["gateway"])
        assert plan.names("update") == ["gateway"]
        (change,) = plan.item("gateway").changes
        assert (change.field, change.deployed, change.local) == ("workersMax", 4, 2)
        assert (await engine.deploy(["gateway"])).ok
        assert [e.id for e in fake.endpoints()] == [gateway.id]  # adopted, not duplicated
        assert (await engine.plan(["gateway"])).names("unchanged") == ["gateway"]
        await engine.undeploy()
    assert fake.endpoints() == [] and fake.templates() == []


async def test_a_template_released_late_is_deleted_later(tmp_path: Path, project: Path) -> None:
    """RunPod refuses deleteTemplate for a while after the endpoint went: undeploy still
    succeeds (the endpoint is gone), records the template, and a later operation deletes it."""
    with FakeRunPod(tmp_path / "lagging", data_plane=False, template_release_lag=4.0) as fake:
        async with _engine(project, fake) as engine:
            assert (await engine.deploy(["gateway"])).ok
            undo = await engine.undeploy()
            assert undo.ok and fake.endpoints() == []
            assert len(fake.templates()) == 1  # still held by the platform
            (environment,) = fake.environments()
            build = next(b for b in fake.builds() if b.id == environment.activeBuildId)
            assert len(build.manifest["templates_to_delete"]) == 1  # recorded
            provider = engine.provider
            assert isinstance(provider, RunPodProvider)
            deadline = asyncio.get_running_loop().time() + 30
            while await provider.sweep_templates(engine.app):
                assert asyncio.get_running_loop().time() < deadline, "template never deleted"
                await asyncio.sleep(0.5)
        assert fake.templates() == []


async def test_a_code_only_change_rolls_that_endpoint(project: Path, fake: FakeRunPod) -> None:
    """Editing a function body changes the template's code fingerprint, so RunPod replaces the
    endpoint's workers; nothing else is touched."""
    async with _engine(project, fake) as engine:
        assert (await engine.deploy()).ok
        templates = {t.id: dict(t.env) for t in fake.templates()}
        before = {e.name: templates[e.templateId] for e in fake.endpoints()}
        source = project / "workers" / "cpu" / "endpoint.py"
        source.write_text(
            source.read_text().replace('" ".join(text.split())', '" ".join(text.split()) ')
        )
        plan = await engine.plan()
        assert plan.names("update") == ["cpu_worker"]
        assert [c.field for c in plan.item("cpu_worker").changes] == ["code"]
        assert (await engine.deploy()).ok
        templates = {t.id: dict(t.env) for t in fake.templates()}
        after = {e.name: templates[e.templateId] for e in fake.endpoints()}
        fingerprint = "_FLASH_SOURCE_FINGERPRINT"
        assert after["cpu_worker"][fingerprint] != before["cpu_worker"][fingerprint]
        assert {n: after[n] for n in after if n != "cpu_worker"} == {
            n: before[n] for n in before if n != "cpu_worker"
        }
        assert (await engine.plan()).names("update") == []
        await engine.undeploy()


async def test_no_key_in_any_repr_or_record_we_print(project: Path, fake: FakeRunPod) -> None:
    async with _engine(project, fake) as engine:
        assert (await engine.deploy(["gateway"])).ok
        provider = engine.provider
        assert isinstance(provider, RunPodProvider)
        (live,) = await provider.api.endpoints()
        target = await provider.target(engine.app, "gateway")
        statuses = await engine.status(probe=False)
        texts = [
            repr(provider),
            repr(provider.config),
            repr(provider.api.client),
            repr(live),
            repr(target),
            repr(await provider.list_endpoints(engine.app)),
            json.dumps([s.to_dict() for s in statuses], default=str),
            provider.describe() or "",
        ]
        ai_key = live.aiKey
        assert ai_key and target.key == ai_key  # invocations use the endpoint's own key
        for text in texts:
            assert fake.api_key not in text and ai_key not in text, text
        await engine.undeploy()


async def test_a_status_refresh_costs_the_same_few_calls_for_any_number_of_endpoints(
    project: Path, fake: FakeRunPod
) -> None:
    """RunPod rate-limits its API: listing the endpoints and then reaching each one (health
    targets) is one look at the API, not one per endpoint."""
    async with _engine(project, fake) as engine:
        assert (await engine.deploy()).ok
        mark = len(fake.graphql_calls)
        targets = await engine.health_targets()
        assert len(targets) == 4
        ops = _ops(fake, mark)
        assert sorted(ops) == sorted(["flashAppByName", "flashBuild", "myEndpoints"]), ops
        await engine.undeploy()
