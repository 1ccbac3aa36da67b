"""CPU worker: cleans text and computes statistics."""

import re

from tetra_rp import CpuInstanceType, CpuLiveServerless, remote

cpu_config = CpuLiveServerless(
    name="cpu_worker",
    instanceIds=[CpuInstanceType.CPU3C_1_2],
    workersMin=0,
    workersMax=2,
    idleTimeout=30,
)

_WORD = re.compile(r"[A-Za-z0-9']+")


@remote(resource_config=cpu_config)
async def preprocess(text: str, lowercase: bool = True) -> dict:
    """Normalise whitespace (and case) and split into words."""
    cleaned = " ".join(text.split())
    if lowercase:
        cleaned = cleaned.lower()
    return {"text": cleaned, "words": _WORD.findall(cleaned)}


@remote(cpu_config)
def word_stats(text: str) -> dict:
    """Count words and characters."""
    words = _WORD.findall(text)
    return {"words": len(words), "chars": len(text), "unique": len({w.lower() for w in words})}


@remote(cpu_config)
class TextAnalyzer:
    """A stateful analyzer: the constructor arguments configure it."""

    def __init__(self, stopwords: list[str] | None = None) -> None:
        self.stopwords = {w.lower() for w in (stopwords or ["a", "an", "the", "and", "of"])}

    def keywords(self, text: str, top: int = 3) -> list[str]:
        """The most frequent words that are not stopwords."""
        counts: dict[str, int] = {}
        for word in _WORD.findall(text.lower()):
            if word not in self.stopwords:
                counts[word] = counts.get(word, 0) + 1
        return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
