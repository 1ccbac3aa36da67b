"""The dashboard's long operations — build, deploy, undeploy, restart — as a part of `FlashApp`.

Each asks for confirmation where it changes something (the plan, the undeploy and restart
dialogs), runs in a worker, drives the progress bar through `OperationProgress` and ends with one
`OperationFinished`, which says the outcome once (log and toast) and refreshes what changed.
Only one runs at a time (the state's `busy`). What an outcome reads like is `reports`.

A build or a deploy can be cancelled (`escape` or `ctrl+c` on the dashboard, as the progress
line says): the build stops at its next step; the deploy starts no more endpoints, those
starting finish, and the outcome says which were not started (see `Engine.deploy`).

A layer of `FlashApp` over `TargetWatch` (see `app_core.py`): it works on the app's backend,
dashboard state and log, and asks the watch to refresh the target's status, logs and health
after a deploy or an undeploy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable

from textual import work
from textual.widgets import Label, ProgressBar

from engine.build import BuildProgress
from engine.mothership import PROVISION_ACTION
from engine.operations import DeployReport, OpEvent
from engine.plan import Plan
from flash_tui import present, reports
from flash_tui.messages import OperationFinished, OperationProgress
from flash_tui.screens.confirm import PlanScreen, RestartScreen, UndeployAllScreen, UndeployScreen
from flash_tui.target_watch import TargetWatch

__all__ = ["NOTHING_SELECTED", "DeploymentActions"]

NOTHING_SELECTED = "Select an endpoint first (in the tree or the table): nothing is selected"
CANCEL_KEYS = "esc · ctrl+c cancel"
# What a cancelled operation left, said once (log and toast).
_CANCELLED = {
    "build": "build cancelled — no new build was made",
}


class DeploymentActions(TargetWatch):
    """Build, deploy and undeploy keys of the app, with their confirmations and outcome."""

    # Cancels the running operation (None: it cannot be cancelled, or nothing runs).
    _cancel: Callable[[], None] | None = None

    def _begin(self, operation: str, cancel: Callable[[], None] | None = None) -> bool:
        if self.refused_while_busy():
            return False
        self.dashboard.query_one(ProgressBar).update(total=None, progress=0)
        self.dashboard.query_one("#progress-text", Label).update("")
        self.dashboard.query_one("#progress-line").add_class("-busy")
        self.dashboard.query_one("#progress-keys", Label).update(CANCEL_KEYS if cancel else "")
        self._cancel = cancel
        self._update(busy=operation)
        return True

    def on_dashboard_screen_cancel_requested(self) -> None:
        """`escape` / `ctrl+c` on the dashboard while an operation runs."""
        self.cancel_operation()

    def cancel_operation(self) -> None:
        """Cancel the running build or deploy (others cannot be: the person is told so)."""
        if not self.state.busy:
            return
        if self._cancel is None:
            self.notify(f"A running {self.state.busy} cannot be cancelled", severity="warning")
            return
        cancel, self._cancel = self._cancel, None
        cancel()
        self.dashboard.query_one("#progress-keys", Label).update("cancelling…")
        self.log_engine(f"{self.state.busy}: cancelling — what has started finishes", "warning")

    def on_operation_progress(self, message: OperationProgress) -> None:
        """The bar follows the running operation."""
        bar = self.dashboard.query_one(ProgressBar)
        bar.update(total=message.total, progress=message.done)
        self.dashboard.query_one("#progress-text", Label).update(message.message)

    def on_operation_finished(self, message: OperationFinished) -> None:
        """Say how the operation ended; refresh what it changed."""
        self._update(busy=None)
        self._cancel = None
        self.dashboard.query_one("#progress-line").remove_class("-busy")
        title = message.operation.capitalize()
        if message.cancelled:
            # One line, said once: the log and the toast carry the same words.
            said = _CANCELLED.get(
                message.operation, f"{message.operation} cancelled — nothing changed"
            )
            self.log_engine(said)
            self.notify(said)
        elif message.interrupted:
            self.log_engine(f"{message.operation} cancelled: {message.summary}", "warning")
            self.notify(message.summary, title=f"{title} cancelled", severity="warning", timeout=10)
        elif message.ok:
            self.log_engine(f"{message.operation}: {message.summary}")
            self.notify(message.summary or "done", title=f"{title} finished")
        else:
            self.log_engine(f"{message.operation} failed: {message.error}", "error")
            self.notify(
                present.short_reason(message.error or "failed"),
                title=f"{title} failed",
                severity="error",
                timeout=10,
            )
        if self.connected and message.operation != "build":
            self._refresh_status()
            # Endpoints came or went: follow the new set (only new lines, no replay).
            self._follow_logs(0)
            if self.health_monitor is not None:
                self.health_monitor.trigger()

    def action_build(self) -> None:
        cancelled = threading.Event()
        if self._begin("build", cancelled.set):
            self._build(cancelled)

    @work(thread=True, group="op")
    def _build(self, cancelled: threading.Event) -> None:
        def progress(event: BuildProgress) -> None:
            self.post_message(OperationProgress("build", event.step, event.done, event.total))

        try:
            result = self.backend.build(progress, cancelled)
        except Exception as exc:  # a BackendError, or a bug: the UI says so either way
            self.post_message(reports.failed("build", exc))
            return
        self.post_message(reports.built(result))

    def action_deploy(self) -> None:
        self.deploy_endpoint(self.selected_endpoint())

    def deploy_endpoint(self, name: str | None) -> None:
        """Deploy one endpoint (the plan shown first); None says to select one."""
        if not name:
            self.notify(NOTHING_SELECTED, severity="warning")
            return
        self._deploy([name])

    def action_deploy_all(self) -> None:
        self._deploy(None)

    def _confirm_plan(
        self, names: list[str] | None, confirmed: reports.Confirmed
    ) -> Callable[[Plan], Awaitable[bool]]:
        title = f"Deploy {names[0]}" if names and len(names) == 1 else "Deploy plan"

        async def confirm(plan: Plan) -> bool:
            screen = PlanScreen(plan.items, title=title, warnings=plan.warnings)
            return confirmed.mark(bool(await self.push_screen_wait(screen)))

        return confirm

    async def _change_deployments(
        self,
        operation: str,
        run: Callable[[reports.Confirmed], Awaitable[DeployReport]],
        cancel: Callable[[], None] | None = None,
    ) -> None:
        """Run a deploy or an undeploy (one long operation at a time) and post its outcome."""
        if not self._begin(operation, cancel):
            return
        confirmed = reports.Confirmed()
        try:
            report = await run(confirmed)
        except Exception as exc:  # a BackendError, or a bug: the UI says so either way
            self.post_message(reports.failed(operation, exc))
            return
        self.post_message(reports.deployed(operation, report, confirmed))

    @work(group="op")
    async def _deploy(self, names: list[str] | None) -> None:
        cancel = asyncio.Event()
        await self._change_deployments(
            "deploy",
            lambda confirmed: self.backend.deploy(
                names,
                self._confirm_plan(names, confirmed),
                self._operation_event("deploy"),
                cancel,
            ),
            cancel.set,
        )

    def _operation_event(self, operation: str) -> Callable[[OpEvent], None]:
        def on_event(event: OpEvent) -> None:
            if event.done is not None:
                said = event.message if event.step == "children" else ""
                self.post_message(
                    OperationProgress(operation, event.step, event.done, event.total, said)
                )
                if said:
                    self.log_engine(f"{operation}: {said}")
                    return
            if event.action == PROVISION_ACTION and event.name and event.state:
                # The mothership recorded a child's progress: the table follows it now.
                self.state = self._state.with_provisioning(str(event.name), str(event.state))
                if event.state != "provisioning" and self.connected:
                    # Up or failed: its row's worker status, reported before, may be stale.
                    self._refresh_status()
            if event.build_step:
                return  # per-step build progress drives the bar; the log gets "built <id>"
            if event.step == "done":
                return  # the outcome is said once, when the operation finishes
            message = event.message
            name = event.name
            if name:
                self.state = self._state.with_event(str(name), f"{self.stamp()} {message}")
                message = f"{name}: {message}"
            if message:
                self.log_engine(f"{operation}: {message}")

        return on_event

    def action_undeploy(self) -> None:
        self.undeploy_endpoint(self.selected_endpoint())

    def undeploy_endpoint(self, name: str | None) -> None:
        """Undeploy one endpoint (confirmed first); None says to select one."""
        if not name:
            self.notify(NOTHING_SELECTED, severity="warning")
            return
        if name not in self.deployed_names():
            self.notify(f"{name} is not deployed", severity="warning")
            return
        self._undeploy([name])

    def action_undeploy_all(self) -> None:
        if not self.deployed_names():
            self.notify("Nothing is deployed", severity="warning")
            return
        self._undeploy(None)

    def _confirm_undeploy(
        self, everything: bool, confirmed: reports.Confirmed
    ) -> Callable[[Plan], Awaitable[bool]]:
        async def confirm(plan: Plan) -> bool:
            names = plan.names("delete")
            if everything:
                screen: UndeployScreen | UndeployAllScreen = UndeployAllScreen(
                    self.backend.project_name, names
                )
            else:
                urls = {n: self._state.url(n) for n in names}
                screen = UndeployScreen(names, urls, plan.warnings)
            if confirmed.mark(bool(await self.push_screen_wait(screen))):
                self.retire(names)
                return True
            return False

        return confirm

    def retire(self, names: Iterable[str]) -> None:
        """Stop showing health for endpoints being undeployed (probes of them will fail)."""
        self.state = self._state.with_retired(names)

    @work(group="op")
    async def _undeploy(self, names: list[str] | None) -> None:
        await self._change_deployments(
            "undeploy",
            lambda confirmed: self.backend.undeploy(
                names,
                self._confirm_undeploy(names is None, confirmed),
                self._operation_event("undeploy"),
            ),
        )

    def action_restart(self) -> None:
        self.restart_endpoint(self.selected_endpoint())

    def restart_endpoint(self, name: str | None) -> None:
        """Restart one deployed endpoint's worker (confirmed first); None says to select one."""
        if not name:
            self.notify(NOTHING_SELECTED, severity="warning")
            return
        if name not in self.deployed_names():
            self.notify(f"{name} is not deployed: nothing to restart", severity="warning")
            return
        if self._begin("restart"):
            self._restart(name)

    @work(group="op")
    async def _restart(self, name: str) -> None:
        screen = RestartScreen(name, self._state.url(name))
        if not await self.push_screen_wait(screen):
            self.post_message(OperationFinished("restart", True, cancelled=True))
            return
        try:
            result = await self.backend.restart(name, self._operation_event("restart"))
        except Exception as exc:  # a BackendError (RunPod cannot), or a bug: said either way
            self.post_message(reports.failed("restart", exc))
            return
        self.post_message(reports.restarted(name, result))
