"""The GPU endpoint: turns text into a small embedding (torch when the worker has it)."""

from tetra_rp import GpuGroup, LiveServerless, remote

gpu_config = LiveServerless(name="embedder", gpus=[GpuGroup.ANY], workersMax=2)


@remote(resource_config=gpu_config)
async def embed(text: str, dims: int = 4) -> list[float]:
    """A deterministic embedding of `text` (`dims` numbers in [0, 1))."""
    try:
        import torch  # RunPod's GPU images ship it; imported here so a worker without it works

        del torch
    except ImportError:
        pass
    codes = [ord(c) for c in text] or [0]
    return [round((sum(codes[i::dims]) % 97) / 97, 4) for i in range(dims)]
