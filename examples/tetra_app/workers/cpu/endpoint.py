"""The CPU endpoint: cleans text up."""

from tetra_rp import CpuInstanceType, CpuLiveServerless, remote

cpu_config = CpuLiveServerless(name="preprocessor", instanceIds=[CpuInstanceType.CPU3C_1_2])


@remote(resource_config=cpu_config)
async def preprocess(text: str) -> dict:
    """Lower-case `text` and collapse its whitespace."""
    words = text.lower().split()
    return {"text": " ".join(words), "words": len(words)}
