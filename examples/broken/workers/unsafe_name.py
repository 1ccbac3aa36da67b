"""A resource name that cannot be a file name."""

from tetra_rp import LiveServerless, remote

unsafe = LiveServerless(name="my worker!")


@remote(unsafe)
async def shout(text: str) -> str:
    return text.upper()
