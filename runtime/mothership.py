"""The mothership: the endpoint of an environment that provisions the others (its children).

A worker started with `FLASH_IS_MOTHERSHIP=true` answers `/ping` at once and, in the
background, reconciles its build's manifest against the environment's persisted one (the state
manager) with `runtime.reconcile.reconcile`, the function the engine's plan uses: new -> deploy,
changed (config hash or code) -> update, removed -> delete, unchanged -> left alone. State
(`config_hash`, `code_hash`, `endpoint_url`, `status`, `error`) is staged and written together
once per step (one request on RunPod, where a write replaces the whole manifest): `provisioning`
before it acts; each saved child with its hashes (RunPod: saved is not up); each child as it
comes up (`deployed` / `updated`) or fails; the end. A mothership killed half-way leaves a state
the next boot converges from: an entry without its new hash is simply "changed" again (the
control plane finds what was created by its name, never making a second), and a child saved at
its config but never seen up is followed again, not saved again. The mothership's own entry
says where it is (`status` reconciling/reconciled, `build_id`, `pid`, the diff).

While the state manager cannot be reached it retries with backoff (1 s doubling to 30 s),
logging why, and converges once it is back. `GET /manifest` (mothership only; the key is
required) answers the environment's manifest, each provisioned child with its `endpoint_url`
and `endpoint_key`, through a TTL cache (`FLASH_MANIFEST_TTL`, 300 s) that its own reconcile
invalidates as it writes; 404 while nothing is provisioned. A child is listed once it is up
(`deployed` / `updated`), not while it is provisioning or failed. Children find each other through
it (`runtime.registry`, `FLASH_ENDPOINTS_URL`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from runtime.asgi import send_json
from runtime.confighash import code_hash
from runtime.control_plane import ControlPlane, DeployProgress, PlaneError, PlaneUnavailable
from runtime.envnumbers import env_number
from runtime.reconcile import ManifestDiff, reconcile
from runtime.runpod_endpoints import lb_url

__all__ = [
    "DEFAULT_MANIFEST_TTL",
    "MOTHERSHIP_ENV",
    "ManifestCache",
    "Mothership",
    "MothershipApp",
    "child_entries",
    "fingerprint",
    "is_mothership",
    "manifest_answer",
    "own_registry_env",
    "runpod_mothership",
]

MOTHERSHIP_ENV = "FLASH_IS_MOTHERSHIP"
DEFAULT_MANIFEST_TTL = 300.0
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0
_NO_MANIFEST = b'{"error":"Manifest not found","detail":"no endpoint is provisioned yet"}'


def is_mothership(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this worker is its environment's mothership (`FLASH_IS_MOTHERSHIP=true`)."""
    value = (environ if environ is not None else os.environ).get(MOTHERSHIP_ENV, "")
    return value.strip().lower() == "true"


def fingerprint(entry: Mapping[str, Any]) -> str | None:
    """What must match for an endpoint to be left alone: its config hash and its code."""
    config = entry.get("config_hash")
    if not isinstance(config, str) or not config:
        return None
    return f"{config}:{entry.get('code_hash') or ''}"


def _resolved(config: Any) -> dict[str, Any]:
    # Values the scanner could not evaluate are markers, not config: never sent to a target.
    if not isinstance(config, Mapping):
        return {}
    return {
        str(k): v
        for k, v in config.items()
        if not (isinstance(v, Mapping) and set(v) == {"$unresolved"})
    }


def child_entries(
    manifest: Mapping[str, Any], build_dir: Path, mothership: str
) -> dict[str, dict[str, Any]]:
    """The build's resources other than the mothership, each with its `code_hash`."""
    out: dict[str, dict[str, Any]] = {}
    resources = manifest.get("resources")
    for name, entry in (resources if isinstance(resources, Mapping) else {}).items():
        if name == mothership or not isinstance(entry, Mapping):
            continue
        item = dict(entry)
        item["code_hash"] = code_hash(build_dir, entry)
        out[str(name)] = item
    return out


class ManifestCache:
    """One value kept for `ttl` seconds; `invalidate` forgets it. A failed reload keeps
    serving the stale value when there is one."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._value: dict[str, Any] | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """The next `get` reloads."""
        self._loaded_at = 0.0

    async def get(self, load: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The cached value, reloaded through `load` when older than the TTL."""
        async with self._lock:
            fresh = self._loaded_at and self._clock() - self._loaded_at <= self.ttl
            if self._value is not None and fresh:
                return self._value
            try:
                self._value = await load()
            except PlaneUnavailable:
                if self._value is None:
                    raise
                return self._value  # stale beats nothing while the state manager is away
            self._loaded_at = self._clock()
            return self._value


class Mothership:
    """Provisions an environment's children from the build it runs, and serves `/manifest`."""

    def __init__(
        self,
        name: str,
        build_dir: Path,
        manifest: Mapping[str, Any],
        plane: ControlPlane,
        *,
        build_id: str | None = None,
        ttl: float = DEFAULT_MANIFEST_TTL,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.build_dir = build_dir
        self.manifest = manifest
        self.plane = plane
        self.build_id = build_id
        self.cache = ManifestCache(ttl)
        self._log = log
        self._sleep = sleep
        self.children = child_entries(manifest, build_dir, name)
        self.last_diff: ManifestDiff | None = None
        self.converged = asyncio.Event()
        # State changes staged for the next write, by resource (None: drop the entry).
        self._pending: dict[str, dict[str, Any] | None] = {}
        # Per child saved and not up yet: what it becomes once up (`deployed` / `updated`).
        self._actions: dict[str, str] = {}

    # -- provisioning ---------------------------------------------------------------------

    def start(self) -> asyncio.Task[ManifestDiff]:
        """`run` in the background (`/ping` answers meanwhile); a crash is logged, never silent."""
        task = asyncio.get_running_loop().create_task(self.run())
        task.add_done_callback(_log_crash)
        return task

    async def run(self) -> ManifestDiff:
        """Reconcile until it succeeds: retries with backoff while the control plane is away."""
        delay = _BACKOFF_FIRST
        while True:
            try:
                diff = await self.reconcile_once()
            except PlaneUnavailable as exc:
                self._log(f"mothership: state manager unreachable ({exc}); retry in {delay:g}s")
            except PlaneError as exc:
                self._log(f"mothership: reconcile failed ({exc}); retry in {delay:g}s")
            else:
                self.converged.set()
                return diff
            await self._sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)

    async def reconcile_once(self) -> ManifestDiff:
        """One pass: read the persisted state, diff, deploy/update/delete, write state."""
        # What a failed pass staged and never wrote is dropped, as a crash would drop it: this
        # pass starts from what is persisted and finds what that pass created by its name.
        self._pending = {}
        persisted = await self.plane.read_state()
        deployed = {
            n: e for n, e in persisted.items() if n != self.name and e.get("role") != "mothership"
        }
        diff = _with_repairs(
            reconcile(self.children, deployed, hash_of=fingerprint),
            await self.plane.endpoint_statuses(),
        )
        self.last_diff = diff
        # Saved at this config by an earlier pass, never seen up (killed while it waited, or
        # it failed to come up): followed again, not saved again.
        waiting = [n for n in diff.unchanged if deployed[n].get("status") not in _SETTLED]
        for name in waiting:
            self._actions[name] = str(deployed[name].get("action") or "deployed")
        self._log(
            f"mothership: reconcile: {len(diff.new)} new, {len(diff.changed)} changed, "
            f"{len(diff.removed)} removed, {len(diff.unchanged)} unchanged"
            + (f" ({len(waiting)} not up yet)" if waiting else "")
        )
        todo = [*diff.new, *diff.changed]
        if todo or waiting or diff.removed:
            self._stage(
                self.name,
                {
                    "role": "mothership",
                    "status": "reconciling",
                    "build_id": self.build_id,
                    "pid": os.getpid(),
                    "diff": diff.to_dict(),
                    "error": None,
                },
            )
            for name in todo:
                self._stage(name, {"role": "child", "status": "provisioning", "error": None})
            await self._flush()  # what is about to change is written before it changes
        if todo:
            # Never recorded as provisioned (new, or a boot killed half-way): a create.
            created = {n for n in todo if n in diff.new or not deployed[n].get("config_hash")}
            await self._provision(todo, created)
        if waiting:
            await self._follow(waiting)
        for name in diff.removed:
            await self._remove(name)
        self._stage(
            self.name,
            {
                "role": "mothership",
                "status": "reconciled",
                "build_id": self.build_id,
                "pid": os.getpid(),
                "diff": diff.to_dict(),
                "reconciled_at": time.time(),
                "error": None,
            },
        )
        await self._flush()
        self._log("mothership: reconciled")
        return diff

    # -- state writes: staged, then written together ---------------------------------------

    def _stage(self, name: str, fields: Mapping[str, Any] | None) -> None:
        """Merge `fields` into what the next `_flush` writes for `name` (None: drop it)."""
        if fields is None:
            self._pending[name] = None
            return
        pending = self._pending.get(name)
        self._pending[name] = {**(pending or {}), **fields}

    async def _flush(self) -> None:
        """Write what is staged (one write on RunPod); children see it at their next read."""
        changes, self._pending = self._pending, {}
        await self.plane.write_states(changes)
        self.cache.invalidate()

    async def _provision(self, names: list[str], new: set[str]) -> None:
        specs = [self._spec(name) for name in names]
        saved: list[str] = []
        seen: set[str] = set()

        async def progress(event: DeployProgress) -> None:
            if event.name not in self.children or event.name in seen:
                return
            seen.add(event.name)
            if event.state == "saved":
                saved.append(event.name)
                self._stage_saved(event, event.name in new)
                return
            self._stage_settled(event, event.name in new)
            await self._flush()  # a child up (or failed) is shown as soon as it is

        for result in await self.plane.deploy(specs, progress):
            await progress(result)  # what the plane reported only in its results
        await self._flush()  # every child saved, with its record: one write
        if saved:
            await self.plane.await_ready(saved, self._settled)

    async def _follow(self, names: list[str]) -> None:
        await self.plane.await_ready(names, self._settled)

    async def _settled(self, event: DeployProgress) -> None:
        if event.name not in self.children:
            return
        self._stage_settled(event, None)
        await self._flush()

    def _stage_saved(self, event: DeployProgress, created: bool) -> None:
        entry = self.children[event.name]
        fields: dict[str, Any] = {
            "role": "child",
            "config_hash": entry.get("config_hash"),
            "code_hash": entry.get("code_hash"),
            "status": "provisioning",
            # What it will say once up: `deployed` for a create, `updated` for an update.
            "action": "deployed" if created else "updated",
            "error": None,
        }
        self._actions[event.name] = fields["action"]
        if event.url:
            fields["endpoint_url"] = event.url
        self._log(f"mothership: {event.name}: saved, waiting for it to come up")
        self._stage(event.name, fields)

    def _stage_settled(self, event: DeployProgress, created: bool | None) -> None:
        entry = self.children[event.name]
        if event.state == "error":
            fields: dict[str, Any] = {"status": "failed", "error": event.error or "deploy failed"}
            self._log(f"mothership: {event.name}: failed")
        else:
            if created is None:  # followed after a save: what the save said it would be
                status = self._actions.get(event.name, "deployed")
            else:
                status = "deployed" if created else "updated"
            fields = {
                "config_hash": entry.get("config_hash"),
                "code_hash": entry.get("code_hash"),
                "status": status,
                "error": None,
            }
            if event.url:
                fields["endpoint_url"] = event.url
            self._log(f"mothership: {event.name}: {status}")
        self._stage(event.name, {"role": "child", **fields})

    async def _remove(self, name: str) -> None:
        results = await self.plane.delete([name])
        failed = [r for r in results if r.state == "error" and r.error != "not deployed"]
        if failed:
            self._stage(name, {"status": "failed", "error": failed[0].error})
        else:
            self._stage(name, None)
            self._log(f"mothership: {name}: deleted")

    def _spec(self, name: str) -> dict[str, Any]:
        entry = self.children[name]
        return {
            "name": name,
            "resource_type": str(entry.get("resource_type") or ""),
            "is_load_balanced": bool(entry.get("is_load_balanced")),
            "config": _resolved(entry.get("config")),
            "config_hash": entry.get("config_hash"),
            "code_hash": entry.get("code_hash"),
            "role": "child",
            "mothership": self.name,
        }

    # -- /manifest ------------------------------------------------------------------------

    async def served_manifest(self) -> dict[str, Any]:
        """The manifest children read: provisioned children with URL and key (cached)."""
        return await self.cache.get(self._load_manifest)

    async def _load_manifest(self) -> dict[str, Any]:
        # The plane's own copy where it keeps one (RunPod): this mothership is the one writer
        # of its children's state, and a fresh read mid-pass would drop what it has not
        # written yet. The local cloud answers it afresh anyway.
        state = await self.plane.read_state(fresh=False)
        resources: dict[str, Any] = {}
        for name, entry in sorted(state.items()):
            url = entry.get("endpoint_url")
            if name == self.name or entry.get("role") == "mothership" or not url:
                continue
            if entry.get("status") not in _SETTLED:
                continue  # saved but not up (or failed): a caller would only wait on it
            item = dict(entry)
            key = await self.plane.endpoint_key(name)
            if key:
                item["endpoint_key"] = key
            resources[name] = item
        manifest = {k: v for k, v in self.manifest.items() if k != "resources"}
        manifest["resources"] = resources
        return manifest


# A child's provisioning that needs nothing more: up at its recorded config.
_SETTLED = frozenset({"deployed", "updated"})

# Statuses of an endpoint whose worker runs, or is about to (engine.status.RUNNING).
_RUNNING = frozenset({"deploying", "healthy", "unhealthy"})


def _with_repairs(diff: ManifestDiff, statuses: Mapping[str, str]) -> ManifestDiff:
    """`diff` with the unchanged children that no longer run (stopped, failed, gone) moved to
    changed: the state says they are provisioned, the target says they are not."""
    broken = [n for n in diff.unchanged if statuses.get(n) not in _RUNNING]
    if not broken:
        return diff
    return ManifestDiff(
        new=diff.new,
        changed=sorted([*diff.changed, *broken]),
        removed=diff.removed,
        unchanged=[n for n in diff.unchanged if n not in broken],
    )


class MothershipApp:
    """ASGI: the mothership's `/manifest` and background provisioning around the endpoint's
    own app (or, for a generated mothership without user code, `/ping` alone)."""

    def __init__(self, mothership: Mothership, inner: Any | None) -> None:
        self.mothership = mothership
        self.inner = inner
        self.exit_code = 0
        self._task: asyncio.Task[ManifestDiff] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/manifest" and scope["method"] in ("GET", "HEAD"):
            await self._manifest(send)
        elif self.inner is not None:
            await self.inner(scope, receive, send)
        elif path == "/ping":
            await send_json(send, 200, b'{"status":"healthy"}')
        else:
            await send_json(send, 404, b'{"error":"not found: this mothership serves no routes"}')

    async def _manifest(self, send: Any) -> None:
        status, body = await manifest_answer(self.mothership)
        headers = [(b"retry-after", b"1")] if status == 503 else []
        await send_json(send, status, body, headers)

    def _start(self) -> None:
        self._task = self.mothership.start()

    async def _lifespan(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.inner is None:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self._stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        async def receive_and_start() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start()
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
            return message

        await self.inner(scope, receive_and_start, send)

    async def _stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        await self.mothership.plane.aclose()


async def manifest_answer(mothership: Mothership) -> tuple[int, bytes]:
    """`GET /manifest`'s status and JSON body: 200 with the provisioned children, 404 while
    none is, 503 while the state manager cannot be read and nothing is cached."""
    try:
        manifest = await mothership.served_manifest()
    except PlaneError as exc:
        return 503, json.dumps({"error": "Manifest unavailable", "detail": str(exc)}).encode()
    if not manifest.get("resources"):
        return 404, _NO_MANIFEST
    return 200, json.dumps(manifest).encode()


def runpod_mothership(
    build_dir: Path, name: str, manifest: Mapping[str, Any], environ: Mapping[str, str]
) -> Mothership | None:
    """The mothership of a load-balanced endpoint on RunPod (its template sets
    `FLASH_MOTHERSHIP_PLANE=runpod`), None elsewhere; ValueError names a missing variable."""
    if environ.get("FLASH_MOTHERSHIP_PLANE", "").strip().lower() != "runpod":
        return None
    if not is_mothership(environ):
        return None
    # Imported here: only a RunPod mothership needs the GraphQL plane.
    from runtime.runpod_plane import RunPodControlPlane

    plane = RunPodControlPlane.from_env(environ)
    ttl = env_number("FLASH_MANIFEST_TTL", DEFAULT_MANIFEST_TTL, environ=environ)
    build_id = environ.get("FLASH_BUILD_ID", "").strip() or plane.build_id

    def log(line: str) -> None:
        print(line, flush=True)

    ship = Mothership(name, build_dir, manifest, plane, build_id=build_id, ttl=ttl, log=log)
    log(f"mothership of environment {plane.environment}: {len(ship.children)} children")
    return ship


def own_registry_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What a RunPod mothership's own code finds its children through: its `/manifest` on its
    own load-balancer host, read with the account key it holds ({} when it has a table)."""
    if environ.get("FLASH_ENDPOINTS") or environ.get("FLASH_ENDPOINTS_URL"):
        return {}
    endpoint_id = environ.get("RUNPOD_ENDPOINT_ID", "").strip()
    key = environ.get("RUNPOD_API_KEY", "").strip()
    if not endpoint_id or not key:
        return {}
    # The same default as the plane's: a mothership whose env lacks the template still has a host.
    url = lb_url(environ.get("FLASH_RUNPOD_LB_URL", "").strip(), endpoint_id)
    return {"FLASH_ENDPOINTS_URL": f"{url}/manifest", "FLASH_ENDPOINTS_TOKEN": key}


def _log_crash(task: asyncio.Task[ManifestDiff]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        print(f"mothership: provisioning stopped: {type(exc).__name__}: {exc}", flush=True)
