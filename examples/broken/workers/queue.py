"""A valid queue-based endpoint (the project is not all broken)."""

from tetra_rp import CpuLiveServerless, remote

queue_config = CpuLiveServerless(name="queue_worker", workersMax=2)


@remote(queue_config)
async def process(data: dict) -> dict:
    return {"processed": data}
