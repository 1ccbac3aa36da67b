"""A load balancer with route problems."""

from tetra_rp import LiveLoadBalancer, remote

api = LiveLoadBalancer(name="broken_api")


@remote(api, method="POST", path="/items")
async def create_item(item: dict) -> dict:
    return item


@remote(api, method="POST", path="/items")  # duplicate route: POST /items again
async def create_item_again(item: dict) -> dict:
    return item


@remote(api, method="GET", path="/ping")  # reserved path
async def my_ping() -> dict:
    return {"ok": True}


@remote(api, method="GET")  # load-balanced but no path
async def no_path() -> dict:
    return {}
