"""What a leader knows about each follower's log (etcd-io/raft's Progress).

Theory of operation
-------------------
`match` is the highest index known to be replicated on the follower; `next`
is the next index to send. A follower is in one of three states:

* PROBE: the leader does not know where the logs agree. It sends at most one
  AppendEntries per heartbeat (`probe_sent` pauses it) and moves `next` back
  on each rejection, using the follower's conflict hint to skip a term at a
  time.
* REPLICATE: the logs agree up to `match`; the leader streams entries
  optimistically, advancing `next` as it sends. At most `inflight_msgs_max`
  unacknowledged messages are outstanding (`Inflights`), which bounds memory
  at the leader and pipelines a fast link.
* SNAPSHOT: the follower needs entries the leader compacted; the leader sends
  the snapshot in chunks and nothing else until the follower acknowledges it.

Invariants: match < next; match never decreases while a leader lasts.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last indexes of unacknowledged AppendEntries, oldest first, bounded."""

    __slots__ = ("capacity", "_queue")

    def __init__(self, capacity: int) -> None:
        assert capacity >= 1
        self.capacity = capacity
        self._queue: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def full(self) -> bool:
        return len(self._queue) >= self.capacity

    def add(self, last_index: int) -> None:
        assert not self.full(), "caller must check full() first"
        queue = self._queue
        assert not queue or queue[-1] < last_index, "in-flight indexes must increase"
        queue.append(last_index)

    def free_through(self, index: int) -> None:
        """Forget every message whose entries are all at or below `index`."""
        queue = self._queue
        while queue and queue[0] <= index:
            queue.popleft()

    def free_first(self) -> None:
        if self._queue:
            self._queue.popleft()

    def reset(self) -> None:
        self._queue.clear()


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflights",
        "recent_active",
        "learner",
        "snapshot_index",
        "snapshot_offset",
        "snapshot_sent_offset",
        "read_seq",
        "lease_tick",
        "commit_sent",
    )

    def __init__(self, *, next_index: int, inflight_msgs_max: int, learner: bool) -> None:
        assert next_index >= 1
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights = Inflights(inflight_msgs_max)
        self.recent_active = False
        self.learner = learner
        self.snapshot_index = 0
        self.snapshot_offset = 0
        """Bytes of the snapshot the follower acknowledged holding."""
        self.snapshot_sent_offset = 0
        """Bytes of the snapshot sent so far (>= snapshot_offset)."""
        self.read_seq = 0
        """Latest ReadIndex round this follower acknowledged."""
        self.lease_tick = 0
        """Leader tick at which the latest heartbeat it acknowledged was sent."""
        self.commit_sent = 0
        """The commit index the follower was last told (as far as it can apply)."""

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"inflight={len(self.inflights)}, learner={self.learner})"
        )

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.snapshot_index + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(ProgressState.REPLICATE)

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.snapshot_index = snapshot_index
        self.snapshot_offset = 0
        self.snapshot_sent_offset = 0

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.snapshot_index = 0
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged `index`; True if that is news."""
        updated = index > self.match
        if updated:
            self.match = index
        self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at prev index `rejected`; move `next`
        back to `match_hint + 1` (never at or below `match`). False if the
        rejection is stale (answers an append we no longer care about)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True
