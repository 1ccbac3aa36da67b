"""`missing_config` is not defined anywhere."""

from tetra_rp import remote


@remote(missing_config)  # noqa: F821
async def orphan(data: dict) -> dict:
    return data
