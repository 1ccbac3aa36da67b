"""GPU worker: text embeddings.

A real app would load a model with torch here. This one computes a deterministic hashed
bag-of-words vector in pure Python, so it runs anywhere (the local cloud runs GPU endpoints
on the CPU)."""

import hashlib
import math

from tetra_rp import GpuGroup, LiveServerless, remote

gpu_config = LiveServerless(
    name="gpu_worker",
    gpus=[GpuGroup.ADA_24, GpuGroup.AMPERE_24],
    workersMin=0,
    workersMax=1,
    idleTimeout=60,
    env={"EMBED_DIMS": "16"},
)


@remote(gpu_config)
async def embed(text: str, dims: int = 16) -> dict:
    """A unit-length hashed embedding of `text` with `dims` dimensions."""
    vector = [0.0] * dims
    for word in text.split():
        digest = hashlib.sha256(word.encode()).digest()
        index = digest[0] % dims
        vector[index] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return {"dims": dims, "vector": [round(v / norm, 6) for v in vector]}
