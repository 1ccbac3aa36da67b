"""Build artifacts for upstream's worker images (reference/worker_images.md §4).

The build fixes each resource's image (`imageName`), ships our runtime and the packages the
image lacks under `_flash_packages/` in pip --target layout, and generates handlers that expose
what the images take: `handler(job)` (QB) and a `fastapi.FastAPI` `app` (LB). These tests look
at the build itself; tests/fakes/test_runpod_image.py runs it in the emulated image.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from projectfiles import copy_example

from engine.build import BuildError, build_project
from engine.build.current import build_is_fresh
from engine.build.images import IMAGE_FILES, image_name
from engine.build.vendor import missing_distributions
from engine.scan import scan_project
from runtime.serialization import deserialize, function_job


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The quickstart example, built: (archive, manifest)."""
    root = tmp_path_factory.mktemp("quickstart") / "quickstart"
    copy_example("quickstart", root)
    result = build_project(root, import_check=False)
    return result.archive, result.manifest


def test_build_fixes_the_upstream_image_of_each_resource(quickstart: tuple[Path, dict]) -> None:
    _archive, manifest = quickstart
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    images = {name: r["imageName"] for name, r in manifest["resources"].items()}
    assert images == {
        "api": f"runpod/flash-lb:{python}-latest",
        "cpu_worker": f"runpod/flash-cpu:{python}-latest",
        # it named the old tetra-rp LB image, which ignores handler files: the current one
        "gateway": f"runpod/flash-lb-cpu:{python}-latest",
        "gpu_worker": f"runpod/flash:{python}-latest",
    }


def test_the_artifact_carries_what_the_image_lacks(quickstart: tuple[Path, dict]) -> None:
    import tarfile

    archive, _manifest = quickstart
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    tops = {name.split("/")[0] for name in names}
    assert "_flash_packages" in tops
    vendored = {n.split("/")[1] for n in names if n.startswith("_flash_packages/")}
    assert {"runtime", "httpx", "httpcore", "httptools"} <= vendored
    assert any(v.startswith("httpx-") and v.endswith(".dist-info") for v in vendored)
    # nothing the image has, and no top-level name of the image's own files
    assert not vendored & {"fastapi", "pydantic", "starlette", "runpod", "uvicorn", "aiohttp"}
    assert not tops & IMAGE_FILES
    assert json.loads(
        tarfile.open(archive).extractfile("flash_manifest.json").read()  # type: ignore[union-attr]
    )["resources"]["api"]["imageName"].startswith("runpod/flash-lb:")


def test_a_custom_image_is_kept_and_flash_images_follow_the_class() -> None:
    custom = {"resource_type": "ServerlessEndpoint", "config": {"imageName": "me/model:v2"}}
    assert image_name(custom, "3.12") == "me/model:v2"
    old = {"resource_type": "LiveServerless", "config": {"imageName": "runpod/tetra-rp:latest"}}
    assert image_name(old, "3.12") == "runpod/flash:py3.12-latest"
    assert image_name({"resource_type": "CpuLiveLoadBalancer"}, "3.10") == (
        "runpod/flash-lb-cpu:py3.10-latest"
    )


def test_the_image_lacks_only_the_http_client_packages() -> None:
    assert sorted(missing_distributions()) == ["httpcore", "httptools", "httpx"]


def test_what_the_image_lacks_follows_an_install_into_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remembered between builds, but a distribution installed meanwhile is seen."""
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "httpx" in missing_distributions()
    assert "httpx" in missing_distributions()  # asked again: the same answer
    # An image distribution that now requires httpx: the image has it, nothing ships it.
    info = tmp_path / "runpod_flash-9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: runpod-flash\nVersion: 9.9\nRequires-Dist: httpx\n"
    )
    assert "httpx" not in missing_distributions()


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_handlers_expose_what_the_images_take(
    quickstart: tuple[Path, dict], tmp_path: Path
) -> None:
    archive, _manifest = quickstart
    app_dir = tmp_path / "app"
    with tarfile.open(archive) as tar:
        tar.extractall(app_dir, filter="data")
    sys.path.insert(0, str(app_dir))
    try:
        qb = _load(app_dir / "handler_cpu_worker.py")
        lb = _load(app_dir / "handler_api.py")
    finally:
        sys.path.remove(str(app_dir))
        for name in [m for m in sys.modules if m == "workers" or m.startswith("workers.")]:
            del sys.modules[name]
    assert isinstance(lb.app, FastAPI)
    assert any(getattr(route, "path", None) == "/compute" for route in lb.app.routes)
    # the WHOLE job event in, JSON out
    event = {"id": "job-1", "input": function_job("word_stats", ["a b"])}
    output = asyncio.run(qb.handler(event))
    json.dumps(output)
    assert deserialize(output["result"]) == {"words": 2, "chars": 3, "unique": 2}


def test_a_project_may_not_ship_its_own_flash_packages(tmp_path: Path) -> None:
    root = tmp_path / "p"
    copy_example("quickstart", root)
    (root / "_flash_packages").mkdir()
    (root / "_flash_packages" / "notes.txt").write_text("mine\n")
    with pytest.raises(BuildError) as raised:
        build_project(root, import_check=False)
    assert "_flash_packages" in str(raised.value)


def test_a_build_with_images_and_packages_stays_fresh(tmp_path: Path) -> None:
    root = tmp_path / "p"
    copy_example("quickstart", root)
    build_project(root, import_check=False)
    manifest = scan_project(root).manifest
    assert build_is_fresh(root, manifest)
    (root / "main.py").write_text((root / "main.py").read_text() + "\n# changed\n")
    assert not build_is_fresh(root, scan_project(root).manifest)


def test_a_build_carrying_another_runtime_is_stale(tmp_path: Path) -> None:
    root = tmp_path / "p"
    copy_example("quickstart", root)
    result = build_project(root, import_check=False)
    manifest = scan_project(root).manifest
    assert build_is_fresh(root, manifest)
    shipped = result.build_dir / "_flash_packages" / "runtime" / "calls.py"
    shipped.write_text(shipped.read_text() + "# an older runtime\n")
    assert not build_is_fresh(root, manifest)


def test_a_project_file_named_like_the_image_s_own_is_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "p"
    copy_example("quickstart", root)
    (root / "logger.py").write_text("import logging\n")
    result = build_project(root, import_check=False)
    (warning,) = [w for w in result.warnings if w.code == "build-image-clash"]
    assert warning.file == "logger.py" and "worker image" in warning.message
