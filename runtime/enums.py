"""Enums of the Flash SDK, with the upstream member names and values."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import TypeVar

_P = TypeVar("_P", bound="_PoolEnum")
_T = TypeVar("_T")


class _FlashEnum(str, Enum):
    """A str enum that also accepts its member names (statically scanned configs keep names)."""

    @classmethod
    def _missing_(cls, value: object) -> _FlashEnum | None:
        if isinstance(value, str):
            key = value.strip()
            for member in cls:
                if key in (member.name, member.name.lower()) or key.lower() == member.value.lower():
                    return member
        return None

    def __str__(self) -> str:
        return self.value


class _PoolEnum(_FlashEnum):
    """Choices with an `ANY` member that stands for every concrete one."""

    @classmethod
    def all(cls: type[_P]) -> list[_P]:
        """Every concrete member, once each."""
        return [m for m in cls if m.name != "ANY"]

    @classmethod
    def expand(cls: type[_P], chosen: Iterable[_T]) -> list[_P] | list[_T]:
        """`chosen`, with `[ANY]` standing for every concrete member."""
        members = list(chosen)
        return cls.all() if members == [cls["ANY"]] else members


class GpuGroup(_PoolEnum):
    """GPU pools; the value is what the RunPod API takes in `gpuIds`."""

    ANY = "any"
    ADA_24 = "ADA_24"
    ADA_32_PRO = "ADA_32_PRO"
    ADA_48_PRO = "ADA_48_PRO"
    ADA_80_PRO = "ADA_80_PRO"
    AMPERE_16 = "AMPERE_16"
    AMPERE_24 = "AMPERE_24"
    AMPERE_48 = "AMPERE_48"
    AMPERE_80 = "AMPERE_80"
    HOPPER_141 = "HOPPER_141"
    # `all()`: every concrete group once (upstream's list has AMPERE_48 twice).


class GpuType(_FlashEnum):
    """Individual GPU models (the newer `Endpoint` API accepts these besides groups)."""

    ANY = "any"
    NVIDIA_GEFORCE_RTX_4090 = "NVIDIA GeForce RTX 4090"
    NVIDIA_GEFORCE_RTX_5090 = "NVIDIA GeForce RTX 5090"
    NVIDIA_RTX_A4000 = "NVIDIA RTX A4000"
    NVIDIA_RTX_A5000 = "NVIDIA RTX A5000"
    NVIDIA_RTX_A6000 = "NVIDIA RTX A6000"
    NVIDIA_L4 = "NVIDIA L4"
    NVIDIA_L40S = "NVIDIA L40S"
    NVIDIA_A40 = "NVIDIA A40"
    NVIDIA_A100_80GB_PCIE = "NVIDIA A100 80GB PCIe"
    NVIDIA_A100_SXM4_80GB = "NVIDIA A100-SXM4-80GB"
    NVIDIA_H100_80GB_HBM3 = "NVIDIA H100 80GB HBM3"
    NVIDIA_H200 = "NVIDIA H200"


class CpuInstanceType(_PoolEnum):
    """CPU instance types, `cpu{gen}{kind}-{vcpu}-{ramGB}`."""

    ANY = "any"
    CPU3G_1_4 = "cpu3g-1-4"
    CPU3G_2_8 = "cpu3g-2-8"
    CPU3G_4_16 = "cpu3g-4-16"
    CPU3G_8_32 = "cpu3g-8-32"
    CPU3C_1_2 = "cpu3c-1-2"
    CPU3C_2_4 = "cpu3c-2-4"
    CPU3C_4_8 = "cpu3c-4-8"
    CPU3C_8_16 = "cpu3c-8-16"
    CPU5C_1_2 = "cpu5c-1-2"
    CPU5C_2_4 = "cpu5c-2-4"
    CPU5C_4_8 = "cpu5c-4-8"
    CPU5C_8_16 = "cpu5c-8-16"

    @property
    def vcpus(self) -> int:
        """Number of vCPUs (0 for ANY)."""
        return 0 if self is CpuInstanceType.ANY else int(self.value.split("-")[1])

    @property
    def max_disk_gb(self) -> int:
        """Container disk limit: vCPU × 10 GB (cpu3g/cpu3c) or × 15 GB (cpu5c)."""
        per_cpu = 15 if self.value.startswith("cpu5c") else 10
        return self.vcpus * per_cpu


class CudaVersion(_FlashEnum):
    """CUDA versions a GPU worker may run on."""

    V11_8 = "11.8"
    V12_0 = "12.0"
    V12_1 = "12.1"
    V12_2 = "12.2"
    V12_3 = "12.3"
    V12_4 = "12.4"
    V12_5 = "12.5"
    V12_6 = "12.6"
    V12_7 = "12.7"
    V12_8 = "12.8"


class DataCenter(_FlashEnum):
    """RunPod data centers (0.20.0 has only EU-RO-1; newer flash adds the rest)."""

    EU_RO_1 = "EU-RO-1"
    US_CA_2 = "US-CA-2"
    US_IL_1 = "US-IL-1"
    US_KS_2 = "US-KS-2"
    US_MO_1 = "US-MO-1"
    US_MO_2 = "US-MO-2"
    US_NC_2 = "US-NC-2"
    US_NE_1 = "US-NE-1"
    US_WA_1 = "US-WA-1"
    EU_CZ_1 = "EU-CZ-1"
    EUR_NO_1 = "EUR-NO-1"


class ServerlessScalerType(_FlashEnum):
    """How RunPod scales workers."""

    QUEUE_DELAY = "QUEUE_DELAY"
    REQUEST_COUNT = "REQUEST_COUNT"


class ServerlessType(_FlashEnum):
    """Queue-based or load-balanced endpoint."""

    QB = "QB"
    LB = "LB"
