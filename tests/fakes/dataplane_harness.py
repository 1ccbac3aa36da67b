"""A fake data plane served alone on a free port (tests of the data plane and the image).

`Plane` serves a `DataPlane` with its own `authorize` (the account key or the endpoint's aiKey,
Bearer or bare), `.apply(view)` runs on the server's loop; `serving(workdir)` cleans up.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fakes.asgi_thread import ThreadedServer
from fakes.runpod_dataplane import DataPlane, EndpointView

__all__ = ["ACCOUNT_KEY", "Plane", "artifact", "image", "serving"]

ACCOUNT_KEY = "rpa_account_key_for_tests_0000"


def image(repository: str) -> str:
    """`repository`'s current Flash image tag for this interpreter's Python."""
    return f"{repository}:py{sys.version_info.major}.{sys.version_info.minor}-latest"


def artifact(path: Path, files: dict[str, str]) -> Path:
    """A gzip tarball of `files` (relative names, `./` prefixed like flash's)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


class Plane:
    """A data plane served on a free port, with the endpoints' keys."""

    def __init__(self, workdir: Path) -> None:
        self.keys: dict[str, str] = {}
        self.plane = DataPlane(workdir, self.authorize)
        # path prefix -> [status, Retry-After or None, how many more times]
        self.faults: dict[str, list[Any]] = {}
        self.faulted: list[str] = []  # paths answered with a fault, in order
        app = FastAPI()
        app.middleware("http")(self._inject)
        app.include_router(self.plane.router)
        self.server = ThreadedServer(app)
        self.plane.base_url = self.server.url
        self.http = httpx.Client(base_url=self.server.url, timeout=60)

    def authorize(self, endpoint_id: str, header: str | None) -> bool:
        value = (header or "").removeprefix("Bearer ").strip()
        return value in (ACCOUNT_KEY, self.keys.get(endpoint_id))

    def apply(self, view: EndpointView) -> None:
        self.keys[view.id] = view.ai_key
        self.server.call(self.plane.apply(view))

    def fail_next(
        self, prefix: str, status: int, *, times: int = 1, retry_after: str | None = None
    ) -> None:
        """Answer the next `times` requests whose path starts with `prefix` with `status`."""
        self.faults[prefix] = [status, retry_after, times]

    async def _inject(self, request: Request, call_next: Any) -> Response:
        for prefix, fault in self.faults.items():
            if request.url.path.startswith(prefix) and fault[2] > 0:
                fault[2] -= 1
                self.faulted.append(request.url.path)
                headers = {"Retry-After": fault[1]} if fault[1] else {}
                body = {"title": "injected fault", "status": fault[0]}
                return JSONResponse(body, status_code=fault[0], headers=headers)
        return await call_next(request)

    def headers(self, endpoint_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[endpoint_id]}"}


@contextlib.contextmanager
def serving(workdir: Path) -> Iterator[Plane]:
    """A `Plane` serving until the block ends; then its workers and server are stopped."""
    harness = Plane(workdir)
    harness.server.start()
    try:
        yield harness
    finally:
        harness.server.call(harness.plane.close())
        harness.http.close()
        harness.server.stop()
