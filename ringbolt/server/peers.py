"""The other nodes' addresses, as this node knows them.

`PeerBook` holds each peer's client (RESP) address and hands its peer
address to the transport. The node's config names the nodes it was created
with; the cluster map adds every node that joined since and marks removed
ones, whose links are closed (their address may come back with a new id).
"""

from __future__ import annotations

from typing import Protocol

from ringbolt.server.config import Address, NodeConfig


class PeerLinks(Protocol):
    """What the book needs of the transport."""

    def set_peer(self, node_id: int, address: Address) -> None: ...

    def remove_peer(self, node_id: int) -> None: ...

    def connected(self, node_id: int) -> bool: ...


class PeerBook:
    def __init__(self, config: NodeConfig, links: PeerLinks) -> None:
        self.links = links
        self.client_addresses: dict[int, str] = {
            p.node_id: str(p.client_address) for p in config.peers.values() if p.client_address}

    def set_address(self, node_id: int, peer_address: str, client_address: str) -> None:
        self.client_addresses[node_id] = client_address
        host, _, port = peer_address.rpartition(":")
        if host and port.isdigit():
            self.links.set_peer(node_id, Address(host, int(port)))

    def forget(self, node_id: int) -> None:
        """A node removed from the cluster: close its links."""
        self.client_addresses.pop(node_id, None)
        self.links.remove_peer(node_id)

    def connected(self, node_id: int) -> bool:
        return self.links.connected(node_id)
