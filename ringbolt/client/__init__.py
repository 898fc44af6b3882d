"""Python clients for ringbolt: `Client`, `AsyncClient` and the `DistributedSystem` facade."""

from ringbolt.client.client import AsyncClient, Client, OutcomeUnknown, Pipeline
from ringbolt.client.facade import DistributedSystem

__all__ = ["AsyncClient", "Client", "DistributedSystem", "OutcomeUnknown", "Pipeline"]
