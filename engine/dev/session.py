"""One `flash-tui dev` session: deploy, serve, and on every save redeploy and reload.

It ties the watch-deploy loop (`engine.dev.loop`) to the dev server (`engine.dev.server`) and the
project's own app (`engine.dev.app`). After each deploy the routes and the endpoints' addresses
are read again and the server swaps to the new version; the project's app is restarted only
when a file it may import changed (anything but the files whose functions run on endpoints:
those it reaches over HTTP), and a new app that fails to start leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from engine.dev.app import AppProcess, DevAppError, find_app, start_app
from engine.dev.loop import Reload, WatchDeploy
from engine.dev.routes import DevRoute, dev_routes
from engine.dev.server import DevServerApp, DevSnapshot
from engine.home import Home
from engine.operation_results import OpEvent
from engine.operations import Engine
from engine.provider import EndpointTarget, ProviderError

__all__ = ["DevSession"]


class DevSession:
    """The dev server's state across reloads (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        *,
        say: Callable[[str], None],
        on_event: Callable[[OpEvent], None] | None = None,
        home: Home | None = None,
    ) -> None:
        self.engine = engine
        self.server = DevServerApp()
        self._say = say
        self._home = home or Home()
        self._endpoint_files: set[str] = set()
        self.loop = WatchDeploy(engine, self._after_deploy, on_event=on_event)
        self.reloads: list[Reload] = []

    @property
    def routes(self) -> tuple[DevRoute, ...]:
        """The routes served now."""
        return self.server.snapshot.routes

    @property
    def app(self) -> AppProcess | None:
        """The project's app child, when it has one and it runs."""
        return self.server.snapshot.app

    async def start(self) -> Reload:
        """The first deploy, then the project's app; serves whatever is good of both."""
        reload = await self.loop.deploy_changes()
        return await self._refresh(reload, app_changed=True)

    async def _after_deploy(self, reload: Reload) -> None:
        reload = await self._refresh(reload, app_changed=self._app_affected(reload.files))
        self.reloads.append(reload)
        self._say(reload.line())

    def _app_affected(self, files: Sequence[str]) -> bool:
        return any(f not in self._endpoint_files for f in files if f.endswith(".py"))

    async def _refresh(self, reload: Reload, *, app_changed: bool) -> Reload:
        if reload.error is not None and not reload.changed:
            return reload  # nothing deployed: keep serving the last good version
        manifest = (await self.engine.scan()).manifest
        routes = tuple(dev_routes(manifest))
        self._endpoint_files = {r.file for r in routes}
        targets = await self._targets(reload, manifest)
        app = self.app
        old = None
        if app_changed:
            new = await self._start_app()
            if new is not None:
                old, app = app, new
                reload = reload.with_also("main.py")
            elif find_app(self.engine.root) is None and app is not None:
                old, app = app, None
        self.server.swap(DevSnapshot(routes, targets, app))
        if old is not None:
            await old.stop()
        return reload

    async def _targets(
        self, reload: Reload, manifest: Mapping[str, Any]
    ) -> dict[str, EndpointTarget]:
        """Every running endpoint's address: after a save only the redeployed ones change (an
        unchanged endpoint kept its worker); an updated one keeps its key, and the deploy said
        where its new worker answers, so only a created one is asked for."""
        known = self.server.snapshot.targets
        names = {r.call.endpoint for r in self.routes}
        resources = manifest.get("resources") or {}
        moved = dict(reload.urls)
        try:
            if not known or reload.error is not None or not names <= set(known):
                return {t.name: t for t in await self.engine.health_targets()}
            targets = {n: t for n, t in known.items() if n not in reload.removed}
            for name in reload.redeployed:
                if name in known and name in moved:
                    balanced = bool((resources.get(name) or {}).get("is_load_balanced"))
                    targets[name] = replace(
                        known[name], base_url=moved[name], is_load_balanced=balanced
                    )
                else:
                    targets[name] = await self.engine.provider.target(self.engine.app, name)
            return targets
        except (ProviderError, OSError) as exc:
            self._say(f"cannot read the endpoints' addresses: {exc}")
            return dict(known)

    async def _start_app(self) -> AppProcess | None:
        found = find_app(self.engine.root)
        if found is None:
            return None
        module, attr = found
        try:
            return await start_app(
                self.engine.root,
                module,
                attr,
                endpoints_file=self._home.endpoints_file(self.engine.app),
                on_line=lambda line: self._say(f"main.py | {line}"),
            )
        except DevAppError as exc:
            self._say(f"main.py not reloaded: {exc}")
            return None

    async def watch(self, stop: asyncio.Event) -> None:
        """Redeploy and reload on every save until `stop` is set."""
        await self.loop.run(stop)

    async def close(self) -> None:
        """Stop the project's app and the forwarding client (endpoints keep running)."""
        app = self.app
        if app is not None:
            with contextlib.suppress(Exception):
                await app.stop()
        await self.server.close()
