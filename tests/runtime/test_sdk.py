"""The Flash SDK in `runtime`: resource models, config hashing, @remote and Endpoint."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from runtime import (
    CpuInstanceType,
    CpuLiveLoadBalancer,
    CpuLiveServerless,
    CpuLoadBalancerSlsResource,
    CpuServerlessEndpoint,
    Endpoint,
    GpuGroup,
    LiveLoadBalancer,
    LiveServerless,
    LoadBalancerSlsResource,
    NetworkVolume,
    PodTemplate,
    ServerlessEndpoint,
    remote,
)
from runtime.endpoint import endpoint_resource
from runtime.enums import DataCenter, ServerlessScalerType, ServerlessType
from runtime.resources import RESOURCE_TYPES, canonical_config, config_hash, resource_class


def test_defaults_follow_upstream() -> None:
    cfg = LiveServerless(name="gpu_worker")
    assert (cfg.workersMin, cfg.workersMax, cfg.idleTimeout, cfg.scalerValue) == (0, 3, 5, 4)
    assert cfg.type is ServerlessType.QB and cfg.scalerType is ServerlessScalerType.QUEUE_DELAY
    assert cfg.gpus == [GpuGroup.ANY]
    # ANY expands to every concrete group, each once (upstream 0.20.0 lists AMPERE_48 twice).
    assert cfg.gpuIds.split(",") == [g.value for g in GpuGroup.all()]
    assert len(set(cfg.gpuIds.split(","))) == len(cfg.gpuIds.split(","))
    assert cfg.locations == "EU-RO-1"
    assert cfg.imageName.startswith("runpod/tetra-rp:")


def test_live_image_cannot_be_overridden() -> None:
    assert LiveLoadBalancer(name="api", imageName="me/mine:1").imageName.startswith(
        "runpod/tetra-rp-lb:"
    )


def test_cpu_classes_drop_gpu_fields() -> None:
    cfg = CpuLiveServerless(name="cpu", instanceIds=["cpu3g-2-8"])
    assert cfg.gpus is None and cfg.gpuCount == 0 and cfg.gpuIds == ""
    assert cfg.instanceIds == [CpuInstanceType.CPU3G_2_8]
    assert CpuServerlessEndpoint(name="c", imageName="i:1").instanceIds == [CpuInstanceType.ANY]


@pytest.mark.parametrize("cls", [LoadBalancerSlsResource, CpuLoadBalancerSlsResource])
def test_load_balancers_force_type_and_scaler(cls: type) -> None:
    cfg = cls(name="lb", imageName="i:1")
    assert cfg.type is ServerlessType.LB
    assert cfg.scalerType is ServerlessScalerType.REQUEST_COUNT
    with pytest.raises(ValueError, match="REQUEST_COUNT"):
        cls(name="lb", imageName="i:1", scalerType="QUEUE_DELAY")
    with pytest.raises(ValueError, match="type must be LB"):
        cls(name="lb", imageName="i:1", type="QB")


@pytest.mark.parametrize(
    ("cls", "live"),
    [
        (ServerlessEndpoint, "LiveServerless"),
        (CpuServerlessEndpoint, "CpuLiveServerless"),
        (LoadBalancerSlsResource, "LiveLoadBalancer"),
        (CpuLoadBalancerSlsResource, "CpuLiveLoadBalancer"),
    ],
)
def test_non_live_classes_need_an_image_as_upstream(cls: type, live: str) -> None:
    # Upstream rejects them at construction: a project that runs here must deploy there too.
    with pytest.raises(ValueError, match="needs imageName, template or templateId") as raised:
        cls(name="gateway")
    assert "'gateway'" in str(raised.value) and live in str(raised.value)
    with pytest.raises(ValueError, match="needs imageName"):
        cls(name="gateway", imageName="")
    assert cls(name="g", imageName="me/img:1").imageName == "me/img:1"
    assert cls(name="g", templateId="tpl-1").templateId == "tpl-1"
    assert cls(name="g", template=PodTemplate(imageName="me/img:1")).template is not None


def test_resource_kinds_cover_the_eight_classes() -> None:
    assert len(RESOURCE_TYPES) == 8
    # Both CPU load balancers are load-balanced (upstream 0.20.0 flags only the GPU ones).
    assert RESOURCE_TYPES["CpuLiveLoadBalancer"].is_load_balanced
    assert RESOURCE_TYPES["CpuLoadBalancerSlsResource"].is_load_balanced
    assert (
        RESOURCE_TYPES["CpuLiveLoadBalancer"].is_live
        and RESOURCE_TYPES["CpuLiveLoadBalancer"].is_cpu
    )
    assert not RESOURCE_TYPES["ServerlessEndpoint"].is_live
    assert resource_class("LiveServerless") is LiveServerless
    with pytest.raises(KeyError, match="known"):
        resource_class("Nope")


def test_invalid_values_name_the_field() -> None:
    with pytest.raises(ValueError, match="workersMin .5. must not exceed workersMax .2."):
        LiveServerless(name="x", workersMin=5, workersMax=2)
    with pytest.raises(ValueError, match="workersMax"):
        config_hash("LiveServerless", {"name": "x", "workersMax": "lots"})
    with pytest.raises(ValueError, match="size must be > 0"):
        NetworkVolume(name="v", size=0)
    with pytest.raises(ValueError, match="US-CA-2"):
        LiveServerless(
            name="x", networkVolume=NetworkVolume(name="v", dataCenterId=DataCenter.US_CA_2)
        )


def test_hash_is_the_same_for_static_and_live_configs() -> None:
    live = LiveServerless(name="gpu", gpus=[GpuGroup.ADA_24], workersMax=5, env={"A": "1"})
    static = {"name": "gpu", "gpus": ["ADA_24"], "workersMax": 5, "env": {"A": "1"}}
    assert live.config_hash == config_hash("LiveServerless", static)
    # Writing a default explicitly is not a change.
    assert config_hash("LiveServerless", {"name": "gpu"}) == config_hash(
        "LiveServerless", {"name": "gpu", "workersMax": 3}
    )
    # Enum values and member names are the same thing.
    assert config_hash("CpuLiveServerless", {"name": "c", "instanceIds": ["cpu3g-2-8"]}) == (
        config_hash("CpuLiveServerless", {"name": "c", "instanceIds": ["CPU3G_2_8"]})
    )


@pytest.mark.parametrize(
    "change",
    [{"workersMax": 4}, {"env": {"A": "2"}}, {"name": "other"}, {"gpus": ["AMPERE_80"]}],
)
def test_hash_changes_with_user_fields(change: dict) -> None:
    base = {"name": "gpu", "gpus": ["ADA_24"], "env": {"A": "1"}}
    assert config_hash("LiveServerless", base) != config_hash("LiveServerless", base | change)


def test_hash_ignores_api_assigned_fields_and_class_matters() -> None:
    base = {"name": "gpu"}
    assigned = base | {"id": "abc", "aiKey": "k", "templateId": "t", "userId": "u"}
    assert config_hash("LiveServerless", base) == config_hash("LiveServerless", assigned)
    same_image = base | {"imageName": LiveServerless.live_image}
    assert config_hash("LiveServerless", base) != config_hash("ServerlessEndpoint", same_image)


def test_canonical_config_writes_enum_names() -> None:
    canon = canonical_config("CpuLiveLoadBalancer", {"name": "api", "instanceIds": ["cpu3c-1-2"]})
    assert canon["instanceIds"] == ["CPU3C_1_2"] and canon["type"] == "LB"
    assert "gpus" not in canon and "id" not in canon


def test_hash_is_stable_across_processes() -> None:
    code = (
        "from runtime.resources import config_hash;"
        "print(config_hash('LiveServerless', {'name': 'g', 'env': {'b': '1', 'a': '2'}}))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {config_hash("LiveServerless", {"name": "g", "env": {"a": "2", "b": "1"}})}


async def test_remote_function_stays_callable_and_carries_metadata() -> None:
    cfg = CpuLiveServerless(name="cpu_worker")

    @remote(cfg, dependencies=["numpy"])
    async def add(a: int, b: int = 2) -> int:
        return a + b

    @remote(resource_config=cfg)
    def double(x: int) -> int:
        return 2 * x

    assert add.__remote_config__["resource_name"] == "cpu_worker"
    assert add.__remote_config__["dependencies"] == ["numpy"]
    assert add.__wrapped__.__name__ == "add"
    assert await add(1) == 3
    assert await double(4) == 8


def test_remote_class_is_returned_as_is() -> None:
    @remote(LiveServerless(name="gpu"))
    class Model:
        def predict(self, x: int) -> int:
            return x + 1

    assert Model().predict(1) == 2
    assert Model.__remote_config__["resource_name"] == "gpu"


def test_remote_validates_load_balancer_routes() -> None:
    lb = LiveLoadBalancer(name="api")
    with pytest.raises(ValueError, match="needs both method and path"):
        remote(lb)
    with pytest.raises(ValueError, match="not one of"):
        remote(lb, method="FETCH", path="/x")
    with pytest.raises(ValueError, match="must start with '/'"):
        remote(lb, method="GET", path="x")
    with pytest.raises(ValueError, match="reserved"):
        remote(lb, method="GET", path="/ping")
    # Lower-case methods are accepted and normalised, consistently with the scanner.
    fn = remote(lb, method="post", path="/x")(lambda: 1)
    assert fn.__remote_config__["method"] == "POST"
    with pytest.raises(TypeError, match="resource config"):
        remote("gpu_config")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "lb", "expected_type"),
    [
        ({"name": "a"}, False, "ServerlessEndpoint"),
        ({"name": "a", "cpu": "cpu3g-1-4"}, False, "CpuServerlessEndpoint"),
        ({"name": "a"}, True, "LoadBalancerSlsResource"),
        ({"name": "a", "cpu": ["CPU3G_1_4"]}, True, "CpuLoadBalancerSlsResource"),
    ],
)
def test_endpoint_mapping(kwargs: dict, lb: bool, expected_type: str) -> None:
    type_name, config = endpoint_resource(kwargs, load_balanced=lb)
    assert type_name == expected_type
    resource_class(type_name).model_validate(config)  # the mapped config is valid


def test_endpoint_mapping_fields() -> None:
    _, config = endpoint_resource(
        {
            "name": "w",
            "gpu": [GpuGroup.ADA_24],
            "workers": (1, 3),
            "idle_timeout": 30,
            "env": {"K": "v"},
        },
        load_balanced=False,
    )
    assert config | {} == {
        "name": "w",
        "gpus": ["ADA_24"],
        "workersMin": 1,
        "workersMax": 3,
        "idleTimeout": 30,
        "env": {"K": "v"},
        "scalerType": "QUEUE_DELAY",
        # not live (what build/deploy provision) and no image of its own: Flash's runtime image
        "imageName": LiveServerless.live_image,
    }
    given = endpoint_resource({"name": "w", "image": "me/img:1"}, load_balanced=True)[1]
    assert given["imageName"] == "me/img:1"
    live = endpoint_resource({"name": "w"}, load_balanced=False, live=True)[1]
    assert "imageName" not in live
    assert endpoint_resource({"name": "w", "workers": 4}, load_balanced=False)[1]["workersMax"] == 4
    for bad in ({"gpu": "ANY", "cpu": "any"}, {"workers": (3, 1)}, {"workers": -1}):
        with pytest.raises(ValueError):
            endpoint_resource({"name": "w", **bad}, load_balanced=False)


async def test_endpoint_decorators() -> None:
    @Endpoint(name="worker", cpu=CpuInstanceType.CPU3G_2_8, workers=(0, 2))
    async def embed(text: str) -> int:
        return len(text)

    assert await embed("abc") == 3
    assert embed.__remote_config__["resource_config"].instanceIds == [CpuInstanceType.CPU3G_2_8]

    api = Endpoint(name="api", cpu="cpu3g-1-4")

    @api.get("/health")
    def health() -> dict:
        return {"ok": True}

    assert api.is_load_balanced
    assert health.__remote_config__["method"] == "GET"
    assert api.resource_config().is_load_balanced
    with pytest.raises(ValueError, match="duplicate route"):
        api.get("/health")
    with pytest.raises(TypeError, match="has routes"):
        api(lambda: None)
    with pytest.raises(ValueError, match="reserved"):
        api.post("/execute")(lambda: None)


def test_serverless_endpoint_is_an_endpoint() -> None:
    assert ServerlessEndpoint(name="s", imageName="me/img:1").imageName == "me/img:1"
    assert CpuLiveLoadBalancer(name="c").is_load_balanced


def test_any_expands_to_every_concrete_member_and_nothing_else_does() -> None:
    assert CpuInstanceType.expand([CpuInstanceType.ANY]) == CpuInstanceType.all()
    assert CpuInstanceType.ANY not in CpuInstanceType.all()
    assert CpuInstanceType.expand(["cpu3g-2-8"]) == ["cpu3g-2-8"]
    assert GpuGroup.expand([GpuGroup.ADA_24]) == [GpuGroup.ADA_24]
    assert GpuGroup.expand([]) == []


def test_the_package_exports_what_its_static_imports_name() -> None:
    # runtime/__init__.py names its public API twice: imports for type checkers and `__all__`
    # for the lazy lookup. The same names, each the object the imported submodule defines.
    tree = ast.parse(Path(runtime.__file__).read_text())
    static = {
        alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("runtime.")
        for alias in node.names
    }
    assert sorted(static) == sorted(runtime.__all__)
    for name, module in static.items():
        assert getattr(runtime, name) is getattr(importlib.import_module(module), name), name


def test_an_enum_or_the_decorator_loads_no_resource_model() -> None:
    code = (
        "import sys; from runtime import GpuGroup, remote; "
        "assert 'runtime.resources' not in sys.modules, 'loaded'; "
        "from runtime import LiveServerless; assert 'runtime.resources' in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
