"""GPU routes of the app (the `flash init` skeleton's `gpu_router`)."""

from fastapi import APIRouter
from pydantic import BaseModel

from .endpoint import embed

gpu_router = APIRouter()


class EmbedRequest(BaseModel):
    text: str
    dims: int = 4


@gpu_router.post("/embed")
async def embed_route(request: EmbedRequest) -> dict:
    """Embed `text` on the GPU endpoint."""
    return {"embedding": await embed(request.text, dims=request.dims)}
