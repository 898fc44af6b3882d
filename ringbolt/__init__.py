"""ringbolt: a highly available, linearizable, sharded key-value store.

The public facade `DistributedSystem` is imported lazily so that
`import ringbolt` stays cheap for the sans-I/O cores and the CLI.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DistributedSystem", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "DistributedSystem":
        from ringbolt.client.facade import DistributedSystem

        return DistributedSystem
    raise AttributeError(name)
