"""The app's HTTP API (tetra_rp era, the `flash init` skeleton): a FastAPI app whose routes
await `@remote` functions, each running on its own endpoint."""

from fastapi import FastAPI
from pydantic import BaseModel
from workers.classifier.endpoint import classify
from workers.cpu import cpu_router
from workers.cpu.endpoint import preprocess
from workers.gpu import gpu_router
from workers.gpu.endpoint import embed

app = FastAPI(title="tetra_app", description="Three endpoints behind one API.")
app.include_router(cpu_router, prefix="/cpu", tags=["cpu"])
app.include_router(gpu_router, prefix="/gpu", tags=["gpu"])


class ClassifyRequest(BaseModel):
    text: str


@app.get("/")
def home() -> dict:
    """What this app serves."""
    return {"message": "tetra_app", "docs": "/docs"}


@app.post("/classify")
async def classify_text(request: ClassifyRequest) -> dict:
    """Clean the text (CPU), embed it (GPU), label the embedding (classifier)."""
    cleaned = await preprocess(request.text)
    embedding = await embed(cleaned["text"])
    label = await classify(embedding)
    return {"text": cleaned["text"], "embedding": embedding, **label}
