"""CPU routes of the app (the `flash init` skeleton's `cpu_router`)."""

from fastapi import APIRouter
from pydantic import BaseModel

from .endpoint import preprocess

cpu_router = APIRouter()


class TextRequest(BaseModel):
    text: str


@cpu_router.post("/preprocess")
async def preprocess_route(request: TextRequest) -> dict:
    """Clean `text` on the CPU endpoint."""
    return await preprocess(request.text)
