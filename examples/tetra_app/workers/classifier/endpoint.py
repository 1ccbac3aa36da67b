"""A second CPU endpoint: labels an embedding."""

from tetra_rp import CpuInstanceType, CpuLiveServerless, remote

classifier_config = CpuLiveServerless(
    name="classifier", instanceIds=[CpuInstanceType.CPU3C_1_2], workersMax=2
)


@remote(resource_config=classifier_config)
def classify(embedding: list[float]) -> dict:
    """`positive` when the embedding's mean is at least 0.5, with that mean as the score."""
    score = round(sum(embedding) / max(len(embedding), 1), 4)
    return {"label": "positive" if score >= 0.5 else "negative", "score": score}
