"""Queue-based endpoints declared with `@Endpoint(...)` (runpod_flash style)."""

from runpod_flash import CpuInstanceType, Endpoint, GpuGroup


@Endpoint(name="summarizer", cpu=CpuInstanceType.CPU3C_1_2, workers=(0, 2))
async def summarize(text: str, max_words: int = 12) -> dict:
    """The first `max_words` words of `text`, and how many were dropped."""
    words = text.split()
    return {"summary": " ".join(words[:max_words]), "dropped": max(0, len(words) - max_words)}


@Endpoint(name="tokenizer", gpu=GpuGroup.ANY, workers=(0, 2), idle_timeout=120)
class Tokenizer:
    """A class endpoint: constructor arguments configure each instance."""

    def __init__(self, lowercase: bool = True) -> None:
        self.lowercase = lowercase

    def tokenize(self, text: str) -> list[str]:
        """Split `text` into tokens."""
        return (text.lower() if self.lowercase else text).split()

    def count(self, text: str) -> int:
        """Number of tokens in `text`."""
        return len(self.tokenize(text))
