"""engine.scan on configs: static evaluation, the config hash, invalid or unnamed configs."""

from __future__ import annotations

from pathlib import Path

from projectfiles import diagnostic_codes, scan_files


def test_static_evaluation(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "consts.py": """
                BASE = 2
                ENV = {"MODE": "prod"}
                """,
            "shared/__init__.py": "",
            "shared/settings.py": "TIMEOUT = 30\nIMAGE = 'repo/' + 'img:1'\n",
            "main.py": """
                import os
                from consts import BASE, ENV
                from shared import settings
                from tetra_rp import (
                    CudaVersion, GpuGroup, LiveServerless, NetworkVolume, ServerlessEndpoint,
                    remote,
                )

                LOCAL = BASE * 2
                cfg = LiveServerless(
                    name="gpu",
                    gpus=[GpuGroup.ADA_24, GpuGroup.AMPERE_80],
                    workersMin=+0,
                    workersMax=LOCAL,
                    idleTimeout=settings.TIMEOUT,
                    env=ENV,
                    cudaVersions=(CudaVersion.V12_4,),
                    networkVolume=NetworkVolume(name="vol", size=50),
                )
                dyn = ServerlessEndpoint(
                    name="dyn",
                    imageName=settings.IMAGE,
                    workersMax=int(os.environ.get("MAX", "3")),
                    scalerValue=-1 * BASE,
                    env={"KEY": os.environ["KEY"]},
                    gpus=[GpuGroup.NOT_A_MEMBER],
                )

                @remote(cfg)
                def a(): ...

                @remote(dyn)
                def b(): ...
                """,
        },
    )
    gpu = result.manifest["resources"]["gpu"]
    assert gpu["config"] == {
        "cudaVersions": ["V12_4"],
        "env": {"MODE": "prod"},
        "gpus": ["ADA_24", "AMPERE_80"],
        "idleTimeout": 30,
        "name": "gpu",
        "networkVolume": {"name": "vol", "size": 50},
        "workersMax": 4,
        "workersMin": 0,
    }
    assert gpu["unresolved"] == [] and gpu["config_hash"] is not None
    dyn = result.manifest["resources"]["dyn"]
    assert dyn["config"]["imageName"] == "repo/img:1"
    assert dyn["config"]["scalerValue"] == -2
    assert dyn["config"]["workersMax"] == {"$unresolved": 'int(os.environ.get("MAX", "3"))'}
    assert dyn["config"]["env"] == {"KEY": {"$unresolved": 'os.environ["KEY"]'}}
    assert dyn["config"]["gpus"] == [{"$unresolved": "GpuGroup.NOT_A_MEMBER"}]
    assert dyn["unresolved"] == ["env", "gpus", "workersMax"]
    assert dyn["config_hash"] is None
    (info,) = [d for d in result.diagnostics if d.code == "manifest-config-unresolved"]
    assert info.severity == "info" and "workersMax" in info.message and info.line > 0


def test_config_hash_matches_the_sdk(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "main.py": """
                from tetra_rp import GpuGroup, LiveServerless, remote
                cfg = LiveServerless(name="w", gpus=[GpuGroup.ADA_24], workersMax=2)

                @remote(cfg)
                def f(): ...
                """
        },
    )
    from runtime import GpuGroup, LiveServerless

    live = LiveServerless(name="w", gpus=[GpuGroup.ADA_24], workersMax=2)
    assert result.manifest["resources"]["w"]["config_hash"] == live.config_hash


def test_invalid_config_is_a_warning_and_no_hash(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "main.py": """
                from tetra_rp import LiveServerless, remote
                cfg = LiveServerless(name="w", workersMin=5, workersMax=1)

                @remote(cfg)
                def f(): ...
                """
        },
    )
    (diag,) = result.diagnostics
    assert diag.code == "manifest-config-invalid" and "workersMin" in diag.message
    assert result.manifest["resources"]["w"]["config_hash"] is None


def test_config_without_literal_name(tmp_path: Path) -> None:
    result = scan_files(
        tmp_path,
        {
            "main.py": """
                import os
                from tetra_rp import LiveServerless, remote
                named_by_var = LiveServerless(name=os.environ["N"])

                @remote(named_by_var)
                def f(): ...

                @remote(LiveServerless(workersMax=1))
                def g(): ...
                """
        },
    )
    assert "named_by_var" in result.manifest["resources"]
    codes = diagnostic_codes(result)
    assert "scan-unknown-config" in codes  # inline, no name at all


def test_non_live_resource_without_image_is_an_error_at_its_line(tmp_path: Path) -> None:
    # Upstream rejects it when the module is imported, so it must not pass here either.
    result = scan_files(
        tmp_path,
        {
            "main.py": """
                from tetra_rp import CpuLoadBalancerSlsResource, ServerlessEndpoint, remote

                gateway_config = CpuLoadBalancerSlsResource(
                    name="gateway",
                    workersMax=2,
                )
                fine = ServerlessEndpoint(name="fine", imageName="me/img:1")

                @remote(gateway_config, method="POST", path="/x")
                async def x(): ...

                @remote(fine)
                def y(): ...
                """,
        },
    )
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert [(d.file, d.line, d.code) for d in errors] == [
        ("main.py", 4, "manifest-config-needs-image")
    ]
    message = errors[0].message
    assert "CpuLoadBalancerSlsResource 'gateway' needs imageName, template or templateId" in message
    assert "upstream rejects it" in message and "CpuLiveLoadBalancer" in message
    # one problem, one diagnostic: no second "invalid config" warning for the same cause
    assert [d for d in result.diagnostics if d.line == 4] == errors
