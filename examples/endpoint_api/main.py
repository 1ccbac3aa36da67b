"""The HTTP API of the endpoint_api app: a load-balanced CPU endpoint with routes.

`/summarize` awaits `summarize`, which runs on the `summarizer` endpoint (cross-endpoint call)."""

from runpod_flash import CpuInstanceType, Endpoint
from workers.text import summarize

api = Endpoint(name="api", cpu=CpuInstanceType.CPU3C_2_4, workers=(1, 3), env={"LOG_LEVEL": "info"})


@api.get("/health")
async def health() -> dict:
    """Liveness of the app."""
    return {"status": "ok"}


@api.post("/echo")
def echo(message: str, times: int = 1) -> dict:
    """JSON body `{"message": "hi", "times": 2}`."""
    return {"echo": " ".join([message] * times)}


@api.post("/summarize")
async def summarize_text(text: str, max_words: int = 12) -> dict:
    """Summarize on the `summarizer` endpoint."""
    return await summarize(text, max_words=max_words)
