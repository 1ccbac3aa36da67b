"""The RunPod GraphQL operations the provider uses: `runtime.runpod_wire`'s, raising
`RunPodError`. The wire models (`Endpoint`, `TemplateInput`, ...) are imported from
`runtime.runpod_wire` where they are used: they live in the runtime, which a mothership on
RunPod runs too."""

from __future__ import annotations

from engine.runpod.graphql import GraphQLClient, RunPodError
from runtime.runpod_wire import RunPodApi as _WireApi

__all__ = ["RunPodApi"]


class RunPodApi(_WireApi):
    """Typed operations over one `GraphQLClient`; failures are `RunPodError`s."""

    error = RunPodError
    client: GraphQLClient

    def __init__(self, client: GraphQLClient) -> None:
        super().__init__(client)
