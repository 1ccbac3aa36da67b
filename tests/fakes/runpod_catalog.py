"""The fake's hardware catalog: GPU pools and models, CPU flavors and instance types, prices.

Pool names, model names and instance ids are RunPod's (runtime.enums mirrors them). Prices and
stock levels are invented but plausible: tests assert that a plan shows the price the API gives,
never a particular number.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    """One GPU model as `gpuTypes` lists it."""

    id: str
    display_name: str
    memory_gb: int
    pool: str
    secure_price: float  # $/hour, one GPU
    community_price: float


@dataclass(frozen=True)
class CpuFlavor:
    """One CPU flavor (`cpu3c`, ...) as `cpuFlavors` lists it."""

    id: str
    group_name: str
    display_name: str
    ram_multiplier: int
    min_vcpu: int
    max_vcpu: int
    vcpu_price: float  # $/hour per vCPU, serverless


GPU_MODELS: tuple[GpuModel, ...] = (
    GpuModel("NVIDIA RTX A4000", "RTX A4000", 16, "AMPERE_16", 0.32, 0.17),
    GpuModel("NVIDIA RTX A5000", "RTX A5000", 24, "AMPERE_24", 0.36, 0.22),
    GpuModel("NVIDIA GeForce RTX 4090", "RTX 4090", 24, "ADA_24", 0.69, 0.34),
    GpuModel("NVIDIA L4", "L4", 24, "ADA_24", 0.43, 0.28),
    GpuModel("NVIDIA GeForce RTX 5090", "RTX 5090", 32, "ADA_32_PRO", 0.94, 0.69),
    GpuModel("NVIDIA RTX A6000", "RTX A6000", 48, "AMPERE_48", 0.49, 0.33),
    GpuModel("NVIDIA A40", "A40", 48, "AMPERE_48", 0.44, 0.35),
    GpuModel("NVIDIA L40S", "L40S", 48, "ADA_48_PRO", 0.86, 0.79),
    GpuModel("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, "AMPERE_80", 1.64, 1.19),
    GpuModel("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, "AMPERE_80", 1.74, 1.39),
    GpuModel("NVIDIA H100 80GB HBM3", "H100 SXM", 80, "ADA_80_PRO", 2.99, 2.69),
    GpuModel("NVIDIA H200", "H200 SXM", 141, "HOPPER_141", 3.99, 3.59),
)

GPU_POOLS: frozenset[str] = frozenset(model.pool for model in GPU_MODELS)

CPU_FLAVORS: tuple[CpuFlavor, ...] = (
    CpuFlavor("cpu3c", "CPU3", "Compute-Optimized", 2, 1, 8, 0.05),
    CpuFlavor("cpu3g", "CPU3", "General Purpose", 4, 1, 8, 0.06),
    CpuFlavor("cpu5c", "CPU5", "Compute-Optimized", 2, 1, 8, 0.07),
)


def gpu_models(ids: list[str] | None) -> list[GpuModel]:
    """The models `gpuTypes(input: {id | ids})` lists (all without a filter)."""
    if ids is None:
        return list(GPU_MODELS)
    return [model for model in GPU_MODELS if model.id in ids]


def gpu_ids_problem(gpu_ids: str) -> str | None:
    """Why a `gpuIds` string is invalid (pools, `-<model>` negations, comma-separated), or None."""
    models = {model.id for model in GPU_MODELS}
    for token in (part.strip() for part in gpu_ids.split(",")):
        if not token:
            continue
        if token.startswith("-"):
            if token[1:] not in models:
                return f"unknown GPU type {token[1:]!r} in gpuIds"
        elif token not in GPU_POOLS:
            return f"unknown GPU pool {token!r} in gpuIds"
    return None


def cpu_flavor(flavor_id: str) -> CpuFlavor | None:
    """The flavor of that id (`cpu3c`), or None."""
    return next((flavor for flavor in CPU_FLAVORS if flavor.id == flavor_id), None)


def cpu_instance(instance_id: str) -> tuple[CpuFlavor, int] | None:
    """The flavor and vCPU count of an instance id like `cpu3c-2-4`, or None when invalid."""
    parts = instance_id.split("-")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    flavor = cpu_flavor(parts[0])
    vcpu, ram = int(parts[1]), int(parts[2])
    if flavor is None or not flavor.min_vcpu <= vcpu <= flavor.max_vcpu:
        return None
    if ram != vcpu * flavor.ram_multiplier:
        return None
    return flavor, vcpu
