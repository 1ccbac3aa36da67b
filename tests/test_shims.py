"""runtime.shims: `tetra_rp` / `runpod_flash` imports served by our runtime, never shadowing a
real package. Each case runs in a fresh interpreter, because import state is process-wide."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, *, pythonpath: list[Path] | None = None, cwd: Path | None = None) -> str:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep examples/ free of __pycache__
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [*(pythonpath or []), ROOT])
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_absent_without_install() -> None:
    out = _run(
        """
        try:
            import tetra_rp
        except ModuleNotFoundError:
            print("absent")
        """
    )
    assert out == "absent"


def test_tetra_rp_and_runpod_flash_names_are_ours() -> None:
    out = _run(
        """
        from runtime import shims
        shims.install()
        import runtime
        from tetra_rp import remote, LiveServerless, CpuLiveLoadBalancer, GpuGroup
        from tetra_rp.core.resources import CpuInstanceType, LoadBalancerSlsResource
        from tetra_rp.core.resources.gpu import GpuGroup as G2
        from tetra_rp.client import remote as r2
        from runpod_flash import Endpoint, GpuType
        from runpod_flash.endpoint import Endpoint as E2
        import runpod_flash as rf
        import tetra_rp.core.resources.serverless as serverless
        assert remote is runtime.remote is r2
        assert LiveServerless is runtime.LiveServerless
        assert GpuGroup is G2 is runtime.GpuGroup
        assert Endpoint is E2 is rf.Endpoint is runtime.Endpoint
        assert serverless.ServerlessEndpoint is runtime.ServerlessEndpoint
        assert shims.is_shim(rf) and shims.is_shim(serverless)
        assert sorted(rf.__all__) == sorted(runtime.__all__)
        print("ok")
        """
    )
    assert out == "ok"


def test_install_is_idempotent() -> None:
    out = _run(
        """
        import importlib, sys
        from runtime import shims
        first, second = shims.install(), shims.install()
        importlib.reload(shims)
        third = shims.install()
        finders = [f for f in sys.meta_path if getattr(f, "__flash_tui_shim__", False)]
        print(first, second, third, len(finders))
        """
    )
    assert out == "True False False 1"


def test_unknown_submodule_is_not_found() -> None:
    out = _run(
        """
        from runtime import shims
        shims.install()
        import tetra_rp
        try:
            import tetra_rp.cli.main
        except ModuleNotFoundError as exc:
            print(exc.name)
        """
    )
    assert out == "tetra_rp.cli"


def test_installed_package_is_never_shadowed(tmp_path: Path) -> None:
    real = tmp_path / "site" / "tetra_rp"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    out = _run(
        """
        from runtime import shims
        shims.install()
        import tetra_rp, runpod_flash
        real = getattr(tetra_rp, "REAL", False)
        print(real, shims.is_shim(tetra_rp), shims.is_shim(runpod_flash))
        try:
            import tetra_rp.core.resources   # the real package has no such submodule
        except ModuleNotFoundError:
            print("real-only")
        """,
        pythonpath=[tmp_path / "site"],
    )
    assert out.splitlines() == ["True False True", "real-only"]


def test_package_appearing_after_install_wins(tmp_path: Path) -> None:
    # The check runs at import time: a build dir with the real package installed later still wins.
    site = tmp_path / "late"
    (site / "runpod_flash").mkdir(parents=True)
    (site / "runpod_flash" / "__init__.py").write_text("REAL = 'late'\n")
    out = _run(
        f"""
        import sys
        from runtime import shims
        shims.install()
        sys.path.insert(0, {str(site)!r})
        import runpod_flash
        print(getattr(runpod_flash, "REAL", None))
        """
    )
    assert out == "late"


def test_user_code_in_quickstart_imports_through_shims() -> None:
    out = _run(
        """
        from runtime import shims
        shims.install()
        import main
        import workers.cpu.endpoint as cpu
        print(main.pipeline.__remote_config__["resource_name"],
              cpu.TextAnalyzer.__remote_config__["resource_name"])
        """,
        pythonpath=[ROOT / "examples" / "quickstart"],
        cwd=ROOT / "examples" / "quickstart",
    )
    assert out == "gateway cpu_worker"
