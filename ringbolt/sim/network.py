"""The simulated network: delay, loss, duplication, reordering, partitions.

Theory of operation
-------------------
`send(message, now)` decides, with the run's RNG, what happens to a message:
dropped (loss, or its link is cut), delivered once, or delivered twice
(duplication), each copy after its own delay drawn from
`[delay_min_units, delay_max_units]`. Without the `reorder` fault a link is
FIFO (a copy never overtakes an earlier one on the same directed link); with
it, copies land in any order their delays give.

Partitions are cuts of *directed* links: a symmetric partition cuts both
directions between two sides, a one-way fault cuts a single direction. Cuts
overlap and end independently (`cut` counts, per link, the cuts covering
it). A link is checked when a message is sent and again when it would be
delivered, so messages in flight when a cut starts are lost too. `heal()`
restores a reliable network (no loss, no duplication, no cuts) for the
liveness phase.

In-flight messages are bounded by `inflight_msgs_max`; beyond it a send is
dropped and counted, never buffered.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ringbolt.sim.params import SimParams

inflight_msgs_max = 20_000

Schedule = Callable[[int, object], None]
"""(deliver_at_units, message) -> None: how the network hands a copy to the event loop."""


class Network:
    def __init__(self, rng: random.Random, params: SimParams, schedule: Schedule) -> None:
        self._rng = rng
        self._params = params
        self._schedule = schedule
        self._fifo = "reorder" not in params.faults
        self._last_at: dict[tuple[int, int], int] = {}
        self.cut: dict[tuple[int, int], int] = {}
        """directed link -> number of active cuts covering it."""
        self.faulty = True
        self.inflight = 0
        self.sent = 0
        self.delivered = 0
        self.dropped = 0
        self.lost = 0
        self.duplicated = 0
        self.overflowed = 0

    def send(self, message: object, now: int) -> None:
        sender: int = message.sender  # type: ignore[attr-defined]
        recipient: int = message.recipient  # type: ignore[attr-defined]
        assert sender != recipient, "a core sent a message to itself"
        self.sent += 1
        link = (sender, recipient)
        if link in self.cut:
            self.dropped += 1
            return
        rng = self._rng
        if self.faulty and self._params.loss_per_mille and rng.randrange(1000) < self._params.loss_per_mille:
            self.dropped += 1
            self.lost += 1
            return
        copies = 1
        if (self.faulty and self._params.duplicate_per_mille
                and rng.randrange(1000) < self._params.duplicate_per_mille):
            copies = 2
            self.duplicated += 1
        for _ in range(copies):
            if self.inflight >= inflight_msgs_max:
                self.overflowed += 1
                return
            at = now + rng.randint(self._params.delay_min_units, self._params.delay_max_units)
            if self._fifo:
                at = max(at, self._last_at.get(link, 0))
                self._last_at[link] = at
            self.inflight += 1
            self._schedule(at, message)

    def arrive(self, message: object) -> bool:
        """Called by the event loop when a copy's delay has passed; False if
        the link was cut meanwhile (the copy is lost)."""
        assert self.inflight > 0
        self.inflight -= 1
        link = (message.sender, message.recipient)  # type: ignore[attr-defined]
        if link in self.cut:
            self.dropped += 1
            return False
        self.delivered += 1
        return True

    @staticmethod
    def partition_links(side: frozenset[int], members: frozenset[int]) -> list[tuple[int, int]]:
        """Every link between `side` and the rest of `members`, both ways."""
        links = []
        for a in sorted(side):
            for b in sorted(members - side):
                links += [(a, b), (b, a)]
        return links

    def add_cut(self, links: list[tuple[int, int]]) -> None:
        for link in links:
            assert link[0] != link[1]
            self.cut[link] = self.cut.get(link, 0) + 1

    def remove_cut(self, links: list[tuple[int, int]]) -> None:
        for link in links:
            count = self.cut.get(link, 0)
            if count > 1:
                self.cut[link] = count - 1
            elif count == 1:
                del self.cut[link]

    def heal(self) -> None:
        self.cut.clear()
        self.faulty = False

    def statistics(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "overflowed": self.overflowed,
            "inflight": self.inflight,
            "cut_links": len(self.cut),
        }
