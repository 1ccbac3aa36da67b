"""A second function called `process`, on another endpoint."""

from tetra_rp import LiveServerless, remote

other_config = LiveServerless(name="other_worker")


@remote(other_config)
async def process(data: dict) -> dict:
    return data
