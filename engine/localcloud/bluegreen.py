"""Blue/green updates: replace an endpoint's running worker without a gap.

The new worker starts beside the old one on a port of its own, unrecorded. Once it answers
`/ping`, the record switches to it in one write (build, hashes, pid, port, address), the app's
endpoint table follows, and the old worker drains (`Supervisor.retire`): requests in flight and
callers that read the old address just before keep being served. A new worker that does not
come up (an import error, no answer in time, an environment that could not be made) is stopped
and the old one keeps serving: its record is put back as it was before the deploy (its build
and hashes, so the next deploy tries the update again), with the failure in `last_error` and a
`deploy_failed` event. A service killed meanwhile finds the unrecorded new worker a stray (see
`supervisor`) and ends it, so the record still explains every process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.localcloud import logfiles
from engine.localcloud.ports import pick_port
from engine.localcloud.store import ENDPOINT_COLUMNS, bound_text
from engine.localcloud.wire import DeployEvent, EndpointSpec, ResultRecord

if TYPE_CHECKING:
    from engine.localcloud.store import Store
    from engine.localcloud.supervisor import Supervisor

__all__ = ["RESTORED", "failure_with_log", "replace", "restore_record"]

# What a deploy's endpoint record held before it: put back when the deploy never started it.
# Every column a deploy may write; not the identity, the running process or the timestamps.
RESTORED = tuple(
    column
    for column in ENDPOINT_COLUMNS
    if column not in {"app", "name", "pid", "pid_started", "created_at", "updated_at", "started_at"}
)
# What the crash watcher writes about a running worker.
_HEALTH = frozenset({"status", "restarts", "crash_times", "last_error"})


def restore_record(
    store: Store, app: str, name: str, previous: dict[str, Any], last_error: str | None = None
) -> None:
    """Put an endpoint's record back as it was before a deploy that did not replace it (failed
    or cancelled), with `last_error` saying why.

    A deploy marks the record `deploying`; if it says anything else now, the old worker
    crashed meanwhile and the crash watcher recorded it: that is the truth, its health columns
    stay (the worker it described is gone, it was not `healthy`)."""
    current = store.get_endpoint(app, name) or {}
    crashed = current.get("status") != "deploying"
    kept = {k: previous.get(k) for k in RESTORED if not (crashed and k in _HEALTH)}
    if last_error is not None and not crashed:
        kept["last_error"] = last_error
    store.upsert_endpoint(app, name, **kept)


async def replace(
    sup: Supervisor,
    spec: EndpointSpec,
    fields: dict[str, Any],
    previous: dict[str, Any],
    timeout: float,
    emit: Callable[[DeployEvent], None],
) -> dict[str, Any]:
    """Update `spec.name` blue/green: start the new worker beside the old one, switch the
    record and the endpoint table to it once it answers, then retire the old one; if it
    does not come up, stop it and leave the old one serving (see the module docstring)."""
    started = time.monotonic()
    app, name = previous["app"], spec.name
    if spec.setup_error:
        error = bound_text(f"environment not ready: {spec.setup_error}")
        return _kept_old(sup, app, spec, previous, error, started, emit)
    record = {**previous, **fields}
    if not Path(record["build_path"]).is_dir():
        error = "its build copy is missing: deploy it again"
        return _kept_old(sup, app, spec, previous, error, started, emit)
    emit(DeployEvent(type="endpoint", name=name, action="update", state="starting"))
    await sup.processes.prepare(record)
    port = pick_port(sup.ports_in_use())
    worker = await sup.launch(record, port)
    switched = False
    try:
        ok, error = await sup.processes.wait_ready(worker, sup.client(), timeout)
        if ok:
            old = sup.workers.get((app, name))
            url = f"http://127.0.0.1:{port}"
            # The switch: one write, then the endpoint table; callers follow the record.
            sup.workers[(app, name)] = worker
            switched = True
            sup.store.upsert_endpoint(
                app,
                name,
                **fields,
                status="healthy",
                pid=worker.pid,
                pid_started=worker.create_time,
                port=port,
                url=url,
                started_at=time.time(),
            )
            sup.write_endpoints_file(app)
            if old is not None:
                sup.retire(old, previous.get("build_id"))
            elapsed = round((time.monotonic() - started) * 1000, 1)
            sup.store.add_event(
                "updated",
                f"updated, pid {worker.pid}, {url}",
                app=app,
                endpoint=name,
                data={"config_hash": spec.config_hash, "elapsed_ms": elapsed},
            )
            return ResultRecord(
                name=name, action="update", ok=True, elapsed_ms=elapsed, url=url
            ).said(emit)
        if not worker.alive():  # its last words are still in the pipe, maybe
            await sup.processes.drain_log(worker, 2.0)
        error = failure_with_log(sup, app, name, error)
    finally:
        if not switched:
            await sup.processes.stop(worker)
    return _kept_old(sup, app, spec, previous, error, started, emit)


def _kept_old(
    sup: Supervisor,
    app: str,
    spec: EndpointSpec,
    previous: dict[str, Any],
    error: str,
    started: float,
    emit: Callable[[DeployEvent], None],
) -> dict[str, Any]:
    """A failed blue/green update: the record describes the old worker (still serving) as
    before the deploy, with the failure in `last_error`."""
    name = spec.name
    error = bound_text(f"the update failed, the previous version keeps serving: {error}")
    restore_record(sup.store, app, name, previous, error)
    sup.store.add_event("deploy_failed", error.splitlines()[0], app=app, endpoint=name)
    elapsed = round((time.monotonic() - started) * 1000, 1)
    return ResultRecord(
        name=name,
        action="update",
        ok=False,
        elapsed_ms=elapsed,
        url=previous.get("url"),
        error=error,
    ).said(emit)


def failure_with_log(sup: Supervisor, app: str, name: str, error: str) -> str:
    """`error` followed by the endpoint log's last lines (keys redacted), bounded."""
    tail = logfiles.last_lines(
        sup.processes.log_path(app, name), 20, sup.store.app_keys(app).values()
    )
    return bound_text(error + ("\n" + "\n".join(tail[-12:]) if tail else ""))
