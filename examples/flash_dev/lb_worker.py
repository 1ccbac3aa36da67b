# cpu load-balanced HTTP endpoint: a pipeline calling the CPU and the GPU workers.
# run with: flash-tui dev
from cpu_worker import count_words
from gpu_worker import gpu_hello
from runpod_flash import Endpoint

api = Endpoint(name="lb_worker", cpu="cpu3c-1-2", workers=(1, 3))


@api.post("/process")
async def process(text: str) -> dict:
    """Count the words on the CPU worker, then greet from the GPU worker."""
    counted = await count_words(text)
    greeting = await gpu_hello({"message": f"{counted['words']} words"})
    return {"words": counted["words"], "gpu": greeting}


@api.get("/health")
async def health() -> dict:
    """Health check for the load-balanced endpoint."""
    return {"status": "healthy"}
