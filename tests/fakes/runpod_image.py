"""An emulator of upstream's Flash worker images (runpod/flash, -cpu, -lb, -lb-cpu).

What the image does at boot (reference/worker_images.md §2): unpack the endpoint's artifact
into its code directory (`/app`; tarfile, members that resolve outside are rejected; that
directory goes first on `sys.path`), then

- QB (`python handler.py`): load `handler_<FLASH_RESOURCE_NAME>.py` BY PATH, take its callable
  `handler`, wrap it (the WHOLE job event in, awaitables awaited, the result out) and hand it to
  the real `runpod` SDK's serverless worker loop, which takes jobs from and posts results to
  `RUNPOD_WEBHOOK_GET_JOB` / `RUNPOD_WEBHOOK_POST_OUTPUT`, as on the platform;
- LB (`uvicorn lb_handler:app`): import fastapi BEFORE unpacking (so the class is the image's),
  load the handler file's `app`, require `isinstance(app, fastapi.FastAPI)`, add `/ping` when no
  route has that path, and serve it with uvicorn (on `--port` instead of the image's 80).

The clean environment: the worker runs as `python -I -S runpod_image.py --site DIR ...`, so it
sees no site-packages, no user site and no PYTHON* variables; `DIR` (`image_site`) holds links
to exactly the distributions the image preinstalls (runpod, fastapi, uvicorn, cloudpickle,
pydantic, aiohttp and their dependency closure, taken from this interpreter's environment via
importlib.metadata). runpod-flash and hf_transfer, also in the image, are not installed here
and left out; our artifacts need neither.

The script part (below `main`) uses only the standard library until the site is on the path.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

# What `uv` installs into the image's interpreter (worker_images.md §1), minus the two packages
# not installed in this environment (see the docstring).
IMAGE_DISTRIBUTIONS = ("runpod", "fastapi", "uvicorn", "cloudpickle", "pydantic", "aiohttp")
DEFAULT_ARTIFACT = "/root/.runpod/artifact.tar.gz"
_UNPACK_SKIP = {"1", "true", "yes"}


def _closure(roots: tuple[str, ...]) -> list[Any]:
    """The installed distributions of `roots` and everything they require (extras excluded)."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, Any] = {}
    pending = list(roots)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional platform dependency that is not installed here
        seen[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            pending.append(requirement.name)
    return [seen[key] for key in sorted(seen)]


def image_site(directory: Path) -> Path:
    """A directory of links to the image's preinstalled distributions (made once, reused)."""
    directory = Path(directory)
    done = directory / ".complete"
    if done.is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for dist in _closure(IMAGE_DISTRIBUTIONS):
        base = Path(str(dist.locate_file("")))
        tops = {
            Path(str(f)).parts[0]
            for f in dist.files or []
            if not str(f).startswith("..") and Path(str(f)).parts[0] != "__pycache__"
        }
        for top in sorted(tops):
            source, link = base / top, directory / top
            if (source.exists() or source.is_dir()) and not link.exists():
                link.symlink_to(source)
    done.write_text("ok\n")
    return directory


def image_problem(image: str) -> str | None:
    """Why this emulator cannot run `image` as the platform would (None: it can).

    It runs the current Flash images (`runpod/flash{,-cpu,-lb,-lb-cpu}`) of its own Python;
    custom images and the older `runpod/tetra-rp*` ones (which never load handler files) are
    not emulated, and an image of another Python would not load the artifact's binaries.
    """
    repository, _, tag = image.partition(":")
    if image_kind(image) is None:
        return f"image {repository!r} is not emulated (only runpod/flash, -cpu, -lb, -lb-cpu)"
    here = f"py{sys.version_info.major}.{sys.version_info.minor}"
    if tag.startswith("py") and not tag.startswith(here + "-") and tag != here:
        return f"image tag {tag!r} is for another Python than this emulator's ({here})"
    return None


def image_kind(image: str) -> str | None:
    """What a Flash image runs: "QB" (handler.py), "LB" (lb_handler.py); None: not one."""
    repository = image.partition(":")[0]
    if repository in ("runpod/flash", "runpod/flash-cpu"):
        return "QB"
    if repository in ("runpod/flash-lb", "runpod/flash-lb-cpu"):
        return "LB"
    return None


def worker_command(site: Path, app_dir: Path, kind: str, port: int | None = None) -> list[str]:
    """The command line of one emulated image worker (`kind` "QB" or "LB")."""
    command = [
        sys.executable,
        "-I",
        "-S",
        os.path.abspath(__file__),
        "--site",
        str(site),
        "--app",
        str(app_dir),
        "--kind",
        kind,
    ]
    if port is not None:
        command += ["--port", str(port)]
    return command


# --------------------------------------------------------------------------------------------
# the image's boot sequence (runs in the clean interpreter)


def _unpack(app_dir: Path) -> None:
    """The image's unpack step: extract the artifact into `app_dir`, put it first on sys.path."""
    if os.environ.get("FLASH_DISABLE_UNPACK", "").lower() in _UNPACK_SKIP:
        return
    marker = os.environ.get("FLASH_RESOURCE_NAME") or os.environ.get("FLASH_ENDPOINT_TYPE")
    if not os.environ.get("RUNPOD_ENDPOINT_ID") or not marker:
        return
    source = Path(os.environ.get("FLASH_BUILD_ARTIFACT_PATH") or DEFAULT_ARTIFACT)
    root = app_dir.resolve()
    with tarfile.open(source, "r:*") as archive:
        members = archive.getmembers()
        for member in members:
            target = (root / member.name).resolve()
            if target != root and root not in target.parents:
                raise RuntimeError(f"artifact member {member.name!r} is outside {root}")
            if member.issym() or member.islnk():
                raise RuntimeError(f"artifact member {member.name!r} is a link")
        archive.extractall(root, members=members)  # noqa: S202  # checked above
    sys.path.insert(0, str(root))


def _load_attribute(app_dir: Path, name: str) -> Any:
    resource = os.environ.get("FLASH_RESOURCE_NAME", "")
    path = (app_dir / f"handler_{resource}.py").resolve()
    if app_dir.resolve() not in path.parents or not path.is_file():
        raise RuntimeError(f"generated handler {path.name} not found in {app_dir}")
    spec = importlib.util.spec_from_file_location(f"handler_{resource}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    value = getattr(module, name, None)
    if value is None:
        raise RuntimeError(f"{path.name} has no attribute {name!r}")
    return value


def _serve_queue(app_dir: Path) -> None:
    import runpod

    _unpack(app_dir)
    handler = _load_attribute(app_dir, "handler")
    if not callable(handler):
        raise RuntimeError("the generated handler's `handler` is not callable")

    async def wrapper(job: dict[str, Any]) -> Any:
        result = handler(job)
        if inspect.isawaitable(result):
            result = await result
        return result

    runpod.serverless.start({"handler": wrapper})


def _serve_load_balanced(app_dir: Path, port: int) -> None:
    import fastapi  # before the unpack, as the image's lb_handler does
    import uvicorn

    _unpack(app_dir)
    app = _load_attribute(app_dir, "app")
    if not isinstance(app, fastapi.FastAPI):
        raise RuntimeError(f"`app` is a {type(app).__name__}, not a fastapi.FastAPI instance")
    if not any(getattr(route, "path", None) == "/ping" for route in app.routes):

        @app.get("/ping")
        async def ping() -> dict[str, str]:
            return {"status": "healthy"}

    uvicorn.run(app, host="127.0.0.1", port=port, timeout_keep_alive=600, log_level="info")


def main(argv: list[str] | None = None) -> None:
    """Boot one emulated image worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", required=True, help="the image's site directory (image_site)")
    parser.add_argument("--app", required=True, help="the image's code directory (/app)")
    parser.add_argument("--kind", choices=("QB", "LB"), required=True)
    parser.add_argument("--port", type=int, default=80)
    args = parser.parse_args(argv)
    sys.path.append(args.site)  # the image's site-packages, after the standard library
    app_dir = Path(args.app)
    app_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(app_dir)  # the image's WORKDIR
    if args.kind == "QB":
        _serve_queue(app_dir)
    else:
        _serve_load_balanced(app_dir, args.port)


if __name__ == "__main__":
    # Under -I the script's directory is not on sys.path (3.11+); on 3.10 it is, and the fake
    # control plane next to this file (runpod.py) would shadow the runpod SDK.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    main()
