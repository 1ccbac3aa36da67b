"""runtime.shims: `tetra_rp` / `runpod_flash` imports served by our runtime, also over a real
installed package. Each case runs in a fresh interpreter, because import state is process-wide;
the real SDK (installed by the `dev` extra) is hidden there unless a test asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Makes the installed tetra_rp / runpod_flash (site-packages) look absent, as on a machine
# without them; packages on a test's own `pythonpath` stay visible.
_HIDE_INSTALLED_SDK = """
import importlib.machinery, sys, sysconfig
class _Hide:
    _site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in ("tetra_rp", "runpod_flash") or "." in name:
            return None
        visible = [p for p in sys.path if p not in self._site]
        spec = importlib.machinery.PathFinder.find_spec(name, visible)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return spec
sys.meta_path.insert(0, _Hide())
"""


def _run(
    code: str,
    *,
    pythonpath: list[Path] | None = None,
    cwd: Path | None = None,
    hide_installed_sdk: bool = True,
) -> str:
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep examples/ free of __pycache__
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [*(pythonpath or []), ROOT])
    prelude = _HIDE_INSTALLED_SDK if hide_installed_sdk else ""
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
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


def test_installed_package_is_shadowed(tmp_path: Path) -> None:
    # Workers must run user code on our SDK even where the real one is installed.
    real = tmp_path / "site" / "tetra_rp"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    out = _run(
        """
        from runtime import shims
        import tetra_rp
        print(getattr(tetra_rp, "REAL", False))
        shims.install()
        import tetra_rp, runpod_flash
        import tetra_rp.core.resources
        print(getattr(tetra_rp, "REAL", False), shims.is_shim(tetra_rp),
              shims.is_shim(runpod_flash))
        """,
        pythonpath=[tmp_path / "site"],
    )
    assert out.splitlines() == ["True", "False True True"]


def test_package_appearing_after_install_is_shadowed_too(tmp_path: Path) -> None:
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
        print(getattr(runpod_flash, "REAL", None), shims.is_shim(runpod_flash))
        """
    )
    assert out == "None True"


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
