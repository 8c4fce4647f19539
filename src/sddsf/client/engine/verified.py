"""The verified log: what this device verified of each space's Merkle log.

The tree of the leaves this device verified (from a snapshot's frontier when
it started from one), the last signed tree head it verified (``seen``, gossiped
in every op it writes), and every author's verified chain head (``deps``).
The cached tree only ever holds leaves that were stored.
"""

from __future__ import annotations

from sddsf.client.engine.common import as_list
from sddsf.client.engine.identity import DeviceIdentity
from sddsf.protocol import merkle
from sddsf.protocol.envelope import TreeHeadRef
from sddsf.protocol.treehead import verify_tree_head
from sddsf.protocol.vv import VersionVector

__all__ = ["VerifiedLog"]


class VerifiedLog:
    """Per space, the verified Merkle tree, tree head and chain heads."""

    def __init__(self, ident: DeviceIdentity) -> None:
        self.ident = ident
        self.store = ident.store
        self.trees: dict[bytes, merkle.MerkleTree] = {}
        self.seen_cache: dict[bytes, TreeHeadRef | None] = {}
        #: The other authors' chain heads per space (``deps``), read once: every
        #: op this device seals names them. Dropped when a sync writes chains.
        self.deps_cache: dict[bytes, VersionVector] = {}
        #: Gossiped heads before a snapshot already proven consistent.
        self.gossip_ok: set[tuple[int, bytes]] = set()

    def forget_all(self) -> None:
        """Drop every cache (another process may have verified more)."""
        self.trees.clear()
        self.seen_cache.clear()
        self.deps_cache.clear()
        self.gossip_ok.clear()

    def tree(self, space_id: bytes) -> merkle.MerkleTree:
        """The Merkle tree of the leaves this device verified (loaded once)."""
        tree = self.trees.get(space_id)
        if tree is None:
            base = self.store.get("base", space_id)
            if base is None:
                tree = merkle.MerkleTree()
            else:  # started from a snapshot: the history before it is a frontier
                size, hashes = as_list(base)
                tree = merkle.MerkleTree.from_frontier(
                    merkle.Frontier.from_hashes(int(size), list(hashes)))
            for _, leaf in self.store.scan("leaf", space_id):
                tree.append(leaf)
            self.trees[space_id] = tree
        return tree

    def seen(self, space_id: bytes) -> TreeHeadRef | None:
        """The last tree head this device verified (gossiped in its ops), if any."""
        if space_id not in self.seen_cache:
            head = self.store.get("head", space_id)
            seen = None
            if head is not None:
                th = verify_tree_head(head, self.ident.relay_key_or_raise(), log=space_id)
                seen = TreeHeadRef(th.size, th.root) if th.size else None
            self.seen_cache[space_id] = seen
        return self.seen_cache[space_id]

    def deps(self, space_id: bytes) -> VersionVector:
        """The other authors' verified chain heads (a new op's ``deps``)."""
        cached = self.deps_cache.get(space_id)
        if cached is not None:
            return cached
        entries = {}
        for key, value in self.store.scan("chain", space_id):
            author = key[16:]
            if author != self.ident.device_id:
                entries[author] = int(as_list(value)[0])
        deps = self.deps_cache[space_id] = VersionVector(entries)
        return deps
