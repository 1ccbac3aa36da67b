"""The quickstart app's gateway: a CPU load balancer whose routes call the other endpoints.

`preprocess` runs on the `cpu_worker` endpoint and `embed` on `gpu_worker`; awaiting them from
here is a cross-endpoint call (Flash routes it through the manifest). `TextAnalyzer` lives on
`cpu_worker` too: its instance is created there and its methods run there."""

from tetra_rp import CpuInstanceType, CpuLoadBalancerSlsResource, remote
from workers.cpu.endpoint import TextAnalyzer, preprocess, word_stats
from workers.gpu.endpoint import embed

gateway_config = CpuLoadBalancerSlsResource(
    name="gateway",
    # Not a Live class, so upstream needs the image to run: Flash's CPU load-balancer image.
    imageName="runpod/tetra-rp-lb-cpu:latest",
    instanceIds=[CpuInstanceType.CPU3C_2_4],
    workersMin=0,
    workersMax=2,
)


@remote(gateway_config, method="POST", path="/pipeline")
async def pipeline(text: str, dims: int = 8) -> dict:
    """Clean the text on the CPU worker, then embed it on the GPU worker."""
    cleaned = await preprocess(text)
    embedding = await embed(cleaned["text"], dims=dims)
    return {"text": cleaned["text"], "words": len(cleaned["words"]), "embedding": embedding}


@remote(gateway_config, method="POST", path="/stats")
async def stats(text: str) -> dict:
    """Word statistics from the CPU worker."""
    return await word_stats(text)


@remote(gateway_config, method="POST", path="/keywords")
async def keywords(text: str, top: int = 3) -> dict:
    """The most frequent words, by a TextAnalyzer instance on the CPU worker."""
    analyzer = TextAnalyzer(stopwords=["the", "a", "and", "of"])
    return {"keywords": await analyzer.keywords(text, top=top)}
