# cpu serverless workers: two functions in one file, so each answers /cpu_worker/{name}/runsync.
# run with: flash-tui dev
from runpod_flash import Endpoint


@Endpoint(name="cpu_worker", cpu="cpu3c-1-2")
async def cpu_hello(input_data: dict) -> dict:
    """CPU worker that returns a greeting."""
    return {"message": input_data.get("message", "Hello from CPU worker!")}


@Endpoint(name="word_counter", cpu="cpu3c-1-2")
def count_words(text: str) -> dict:
    """Number of words in `text`."""
    return {"words": len(text.split())}
