"""What the client does after an error: retry where, wait how long, or give up.

Theory of operation
-------------------
A request may fail before it reached a node (connection refused: it never
ran, so it is always safe to retry), or after (connection lost, timeout: a
write may or may not have been applied). Nodes also answer with typed
errors: `TRYAGAIN ... not executed` and `BUSY` mean "nothing happened, retry",
`MOVED` means "your map is stale". A write whose outcome is unknown is never
retried behind the caller's back: it raises `OutcomeUnknown`, so the caller
decides (this is what keeps recorded histories honest).

Backoff is bounded exponential with jitter from an injected RNG; every call
has a deadline.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    RedisError,
    TryAgainError,
)


class OutcomeUnknown(RedisError):
    """A write was sent but no answer came back: it may or may not have been applied."""


class Action(enum.Enum):
    RETRY = "retry"
    """Nothing happened; refresh the layout and try again (maybe elsewhere)."""
    UNKNOWN = "unknown"
    """A write may have happened: raise `OutcomeUnknown`."""
    RAISE = "raise"
    """A definite answer (e.g. a syntax error): hand it to the caller."""


RETRYABLE_PREFIXES = ("BUSY", "MOVED", "LOADING", "CLUSTERDOWN")
RETRYABLE_CLASSES = (BusyLoadingError, ClusterDownError, MovedError)


def classify(error: BaseException, *, sent: bool, write: bool) -> Action:
    """Decide what to do after `error` for a request that was (not) `sent`.

    redis-py strips well-known error codes into exception classes
    (`TRYAGAIN ...` becomes `TryAgainError("...")`), so both forms are handled."""
    message = str(error)
    if not sent:
        return Action.RETRY
    if isinstance(error, OutcomeUnknown):
        return Action.UNKNOWN if write else Action.RETRY
    if isinstance(error, RETRYABLE_CLASSES) or message.startswith(RETRYABLE_PREFIXES):
        return Action.RETRY
    if isinstance(error, TryAgainError) or message.startswith("TRYAGAIN"):
        if not write or "not executed" in message or "not committed" in message:
            return Action.RETRY
        return Action.UNKNOWN
    if isinstance(error, (ConnectionError, TimeoutError, OSError)) or _is_transport_error(error):
        return Action.UNKNOWN if write else Action.RETRY
    return Action.RAISE


def _is_transport_error(error: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(error, (RedisConnectionError, RedisTimeoutError))


@dataclass(slots=True)
class Backoff:
    """Bounded exponential backoff with jitter from an injected RNG."""

    rng: random.Random
    initial_s: float = 0.01
    maximum_s: float = 0.5
    attempt: int = 0

    def next_delay_s(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * (2**self.attempt))
        self.attempt += 1
        return ceiling / 2 + self.rng.random() * ceiling / 2
