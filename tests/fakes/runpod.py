"""A contract fake of RunPod Serverless on one port: control plane, uploads, data plane.

Run it alone with `python tests/fakes/runpod.py --port P`: it prints one `export NAME=value` line
per variable (the API key included) that points the CLI at it, and serves until Ctrl+C. In
tests, `FakeRunPod(workdir)` is a context manager serving it from a thread on a free port.

URL layout (base `http://127.0.0.1:P`):

| plane | where | variable |
|---|---|---|
| GraphQL | `POST /api/graphql` | `RUNPOD_API_BASE_URL=…/api` |
| REST v2 workers and logs (data plane) | `/api/v2/serverless/{id}/workers…` | (same base) |
| queue API (data plane) | `/v2/{id}/run`, `/status/{job}`, … | `RUNPOD_ENDPOINT_BASE_URL=…/v2` |
| REST v1 | `/rest/v1/{endpoints,templates,networkvolumes}` | `RUNPOD_REST_API_URL=…/rest/v1` |
| load-balanced endpoints (data plane) | `/lb/{id}/<path>` | `FLASH_RUNPOD_LB_URL=…/lb/{id}` |
| presigned uploads / downloads | `PUT`/`GET /upload/{objectKey}?sig=…` | — |

Auth (runpod_api.md §1): the account key as `Authorization: Bearer <key>` or the bare key on
every plane, or `?api_key=<key>` on GraphQL; the data plane also takes the endpoint's `aiKey`.
A missing or wrong key gets 401. Presigned URLs carry their own signature and refuse an
Authorization header, as S3 does.

What the fake does as RunPod documents it and what it infers is listed in the docstrings of
`runpod_endpoints` (endpoints and templates), `runpod_flash` (apps, environments, builds,
uploads), `runpod_schema` (the GraphQL schema and its validation) and `runpod_app` (the app that
serves them). This module is the test fixture (`FakeRunPod`) and the script.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run as a script, this directory is sys.path[0], where this file would shadow the real
    # `runpod` SDK and `fakes` would not be a package: import from the tests directory instead.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import dataclasses
import json
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn

from fakes.runpod_app import FakeApp, GraphQLCall
from fakes.runpod_endpoints import Endpoint, Template
from fakes.runpod_faults import Fault
from fakes.runpod_flash import FlashApp, FlashBuild, FlashEnvironment
from fakes.runpod_workers import ImageWorker

T = TypeVar("T")
_LOOP_TIMEOUT = 60.0
_GRACEFUL_SECONDS = 3


class FakeRunPod:
    """The fake served from a thread on a free 127.0.0.1 port, with test-side helpers.

    Use as a context manager (`with FakeRunPod(tmp_path) as fake:`); `stop()` shuts the server
    and the data plane's workers down. `data_plane=False` serves the control plane only;
    `template_release_lag` makes deleteTemplate fail for that many seconds after the template's
    last endpoint went away, as RunPod's can.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int = 0,
        api_key: str | None = None,
        data_plane: bool = True,
        template_release_lag: float = 0.0,
    ) -> None:
        self.workdir = workdir
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key or "rpa_" + secrets.token_hex(20).upper()
        self._server = FakeApp(workdir, self.url, self.api_key, data_plane, template_release_lag)
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"FakeRunPod(url={self.url!r})"  # never the key

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeRunPod:
        """Serve in a daemon thread; returns once the server accepts requests."""
        config = uvicorn.Config(
            self._server.app,
            log_level="warning",
            lifespan="on",
            loop="asyncio",
            # A client still following a log stream (it never ends) must not hold the shutdown,
            # and with it the data plane's close, which stops the workers.
            timeout_graceful_shutdown=_GRACEFUL_SECONDS,
        )
        self._uvicorn = uvicorn.Server(config)
        self._socket.listen(128)
        self._thread = threading.Thread(
            target=self._uvicorn.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _LOOP_TIMEOUT
        while not self._uvicorn.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if not self._uvicorn.started:
            raise RuntimeError("the RunPod fake did not start")
        return self

    def stop(self) -> None:
        """Shut down (workers included) and wait for the server thread."""
        if self._uvicorn is not None and self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join(timeout=30)
        self._socket.close()

    def wait(self) -> None:
        """Block until the server stops (Ctrl+C stops it in the script)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> FakeRunPod:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what clients need ----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The variables that point the CLI (and the SDKs) at this fake, the key included."""
        return {
            "RUNPOD_API_KEY": self.api_key,
            "RUNPOD_API_BASE_URL": f"{self.url}/api",
            "RUNPOD_ENDPOINT_BASE_URL": f"{self.url}/v2",
            "RUNPOD_REST_API_URL": f"{self.url}/rest/v1",
            "FLASH_RUNPOD_LB_URL": f"{self.url}/lb/{{id}}",
        }

    # --- state inspection (run on the server's loop: no torn reads) -------------------------
    @property
    def graphql_calls(self) -> list[GraphQLCall]:
        """Every authenticated GraphQL request so far, oldest first."""
        return self._on_loop(lambda: list(self._server.calls))

    def endpoints(self) -> list[Endpoint]:
        """Copies of the account's endpoints."""
        book = self._server.control.book
        return self._on_loop(lambda: [dataclasses.replace(e) for e in book.endpoints.values()])

    def templates(self) -> list[Template]:
        """Copies of the account's templates."""
        book = self._server.control.book
        return self._on_loop(
            lambda: [dataclasses.replace(t, env=dict(t.env)) for t in book.templates.values()]
        )

    def endpoint_tables(self) -> dict[str, str | None]:
        """Each endpoint's table of the others (`FLASH_ENDPOINTS` in its template's env, as
        JSON text) by endpoint name; None where the template has none."""
        templates = {t.id: t for t in self.templates()}
        return {
            e.name: templates[e.templateId].env.get("FLASH_ENDPOINTS") for e in self.endpoints()
        }

    def apps(self) -> list[FlashApp]:
        """Copies of the flash apps."""
        flash = self._server.control.flash
        return self._on_loop(lambda: [dataclasses.replace(a) for a in flash.apps.values()])

    def environments(self) -> list[FlashEnvironment]:
        """Copies of the flash environments."""
        flash = self._server.control.flash
        return self._on_loop(lambda: [dataclasses.replace(e) for e in flash.environments.values()])

    def builds(self) -> list[FlashBuild]:
        """Copies of the flash builds (manifests deep-copied)."""
        flash = self._server.control.flash
        return self._on_loop(
            lambda: [
                dataclasses.replace(b, manifest=json.loads(json.dumps(b.manifest)))
                for b in flash.builds.values()
            ]
        )

    def workers(self, endpoint_id: str) -> list[ImageWorker]:
        """The endpoint's current worker processes (none without a data plane)."""
        plane = self._server.plane
        return self._on_loop(lambda: plane.workers(endpoint_id) if plane is not None else [])

    def secret_sightings(self, secret: str | None = None) -> list[str]:
        """Where the fake's state holds `secret` (default: the account key): template env
        values, endpoint and template fields, build manifests. Each place is named, never the
        secret; the key must never reach a template's env (workers use endpoint keys)."""
        needle = secret or self.api_key
        control = self._server.control

        def search() -> list[str]:
            found = []
            for template in control.book.templates.values():
                found += [
                    f"template {template.name!r} env {key}"
                    for key, value in template.env.items()
                    if needle in value or needle in key
                ]
                if needle in json.dumps(template.wire()["config"]) or needle in template.dockerArgs:
                    found.append(f"template {template.name!r} config/dockerArgs")
            for endpoint in control.book.endpoints.values():
                fields = dataclasses.asdict(endpoint)
                fields.pop("aiKey")
                if needle in json.dumps(fields):
                    found.append(f"endpoint {endpoint.id} fields")
            for build in control.flash.builds.values():
                if needle in json.dumps(build.manifest):
                    found.append(f"manifest of build {build.id}")
            return found

        return self._on_loop(search)

    # --- changes behind the client's back ---------------------------------------------------
    def edit_endpoint(
        self, endpoint_id: str, *, env: dict[str, str] | None = None, **fields: Any
    ) -> Endpoint:
        """Change an endpoint as the console would (EndpointInput fields; `env` = template env)."""
        control = self._server.control

        async def edit() -> Endpoint:
            endpoint = control.book.save_endpoint(
                {**fields, "id": endpoint_id}, set(control.flash.environments)
            )
            if env is not None:
                control.book.templates[endpoint.templateId].env = dict(env)
            await control.sync(endpoint)
            return dataclasses.replace(endpoint)

        return self._run(edit())

    # --- fault injection --------------------------------------------------------------------
    def fail_next(
        self,
        target: str,
        *,
        status: int | None = None,
        graphql_error: str | None = None,
        retry_after: float | str | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Make the next `times` requests to `target` fail (or only be slow).

        `target` is a path prefix (`/api/graphql`, `/v2/{id}/runsync`, `/upload/`) or a GraphQL
        operation/root field name (`saveEndpoint`, `myself`). Give `status` (401, 429, 5xx, …;
        `retry_after` sets the Retry-After header), or `graphql_error` (HTTP 200 with
        `errors`), or only `delay` seconds.
        """
        if status is not None and graphql_error is not None:
            raise ValueError("a fault is an HTTP status or a GraphQL error, not both")
        if status is None and graphql_error is None and delay <= 0:
            raise ValueError("a fault needs a status, a graphql_error or a delay")
        fault = Fault(
            target=target,
            status=status,
            graphql_error=graphql_error,
            retry_after=None if retry_after is None else str(retry_after),
            delay=delay,
            remaining=times,
        )
        self._server.faults.add(fault)

    def pending_faults(self) -> list[Fault]:
        """Faults that have not fired (all their times) yet."""
        return self._server.faults.pending()

    def clear_faults(self) -> None:
        """Drop every pending fault (requests already held by one still get its answer)."""
        self._server.faults.clear()

    # --- running on the server's loop -------------------------------------------------------
    def _on_loop(self, read: Callable[[], T]) -> T:
        async def call() -> T:
            return read()

        return self._run(call())

    def _run(self, coroutine: Any) -> Any:
        loop = self._server.loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("the RunPod fake is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(_LOOP_TIMEOUT)


@dataclass
class _Options:
    port: int
    workdir: Path | None
    api_key: str | None
    data_plane: bool


def _parse(argv: list[str] | None) -> _Options:
    parser = argparse.ArgumentParser(
        prog="python tests/fakes/runpod.py",
        description="Serve the RunPod contract fake on 127.0.0.1 and print the variables "
        "that point flash-tui (and the SDKs) at it.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--workdir", type=Path, help="state directory (default: a temporary one)")
    parser.add_argument("--api-key", help="the account key to accept (default: a random one)")
    parser.add_argument(
        "--no-data-plane", action="store_true", help="control plane only (no workers)"
    )
    args = parser.parse_args(argv)
    return _Options(args.port, args.workdir, args.api_key, not args.no_data_plane)


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl+C, after printing the `export` lines."""
    # A shell's background job starts with SIGINT ignored, and Python then leaves it ignored:
    # the promise is that Ctrl+C (SIGINT) stops the fake, wherever it was started from.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    options = _parse(argv)
    temporary = options.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="fake-runpod-")) if temporary else options.workdir
    assert workdir is not None
    try:
        fake = FakeRunPod(
            workdir, port=options.port, api_key=options.api_key, data_plane=options.data_plane
        )
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{options.port}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        fake.start()
        for name, value in fake.env().items():
            print(f"export {name}={value}", flush=True)
        print(f"# RunPod fake on {fake.url}; Ctrl+C stops it", file=sys.stderr, flush=True)
        fake.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
