"""The RunPod target and the two per-endpoint actions, against the contract fake: a restart is
refused in words (its API cannot restart workers; never a pretended success), and a deploy
cancelled once the build is active saves no endpoint, which the next plan still creates."""

from __future__ import annotations

import asyncio
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


def _engine(project: Path, fake: FakeRunPod) -> Engine:
    return Engine(project, RunPodProvider(environ=fake.env(), health_wait=0))


async def test_restart_is_not_available_on_runpod(tmp_path: Path, fake: FakeRunPod) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    async with _engine(project, fake) as engine:
        assert (await engine.deploy()).ok
        before = len(fake.graphql_calls)
        with pytest.raises(OpError, match="restart is not available on RunPod"):
            await engine.restart("gateway")
        saves = [c for c in fake.graphql_calls[before:] if c.operation == "saveEndpoint"]
        assert saves == []


async def test_cancelled_deploy_saves_no_endpoint_not_started(
    tmp_path: Path, fake: FakeRunPod
) -> None:
    project = copy_example("quickstart", tmp_path / "quickstart")
    async with _engine(project, fake) as engine:
        cancel = asyncio.Event()

        def on_event(event: OpEvent) -> None:
            if event.step == "upload":  # the build is active; no endpoint saved yet
                cancel.set()

        report = await engine.deploy(cancel=cancel, on_event=on_event)
        assert report.interrupted
        assert sorted(report.not_started()) == sorted(report.plan.names("create"))
        assert not any(c.operation == "saveEndpoint" for c in fake.graphql_calls)
        plan = await engine.plan()
        assert plan.names("create") == report.plan.names("create")
