"""Batch trees on disk: built once when a batch closes, read for every proof.

A batch's tree is OpenZeppelin's array layout (:class:`~edgeledger.ledger.merkle.MerkleTree`) written
as one file, ``DATA_DIR/trees/<batch id>.tree``::

    b"ELTREE1\\0" | uint64 big-endian leaf count n | 2n-1 nodes of 32 bytes (root first, leaves last)

Leaves sit at positions n-1 .. 2n-2 in descending hash order (StandardMerkleTree sorts them), so the
position of a leaf is found by binary search in the file and a proof needs only log2(n) reads: proofs
for a batch of a million records come from a memory map without loading the tree.

The tree is shared by every host through the database: closing a batch stores the file's bytes as
:class:`BatchTreePiece` rows in the close's transaction, and a host without a local copy (another API
host, a new one, a lost disk) fetches them once into ``DATA_DIR/trees`` (:func:`open_batch_tree`). The
local file is only a cache: the records' stored leaves rebuild it byte for byte (:func:`build_batch_tree`),
and a file, local or fetched, whose root differs from the batch's is rebuilt, never trusted.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from edgeledger.config import Settings
from edgeledger.deliveries.models import BatchExtraLeaf, BatchTreePiece, DeliveryBatch, DeliveryRecordRow
from edgeledger.ledger.merkle import MerkleTree

MAGIC = b"ELTREE1\0"
_HEADER = len(MAGIC) + 8
PIECE = 1 << 20  # bytes per BatchTreePiece row


def tree_path(settings: Settings, batch_id: str) -> Path:
    return Path(settings.data_dir) / "trees" / f"{batch_id}.tree"


def batch_leaves(session: Session, batch: DeliveryBatch) -> list[bytes]:
    """The stored leaves of a batch: its records' and its other leaves' (any order: the tree sorts them)."""
    records = session.scalars(select(DeliveryRecordRow.leaf).where(DeliveryRecordRow.batch_pk == batch.id))
    extra = session.scalars(select(BatchExtraLeaf.leaf).where(BatchExtraLeaf.batch_pk == batch.id))
    return [*records, *extra]


def write_tree(path: Path, tree: MerkleTree) -> None:
    """Atomically (write, fsync, rename) store ``tree`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(MAGIC + len(tree).to_bytes(8))
        handle.write(b"".join(tree.nodes))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def build_batch_tree(
    session: Session, settings: Settings, batch: DeliveryBatch, *, share: bool = True
) -> MerkleTree:
    """Build the tree over the batch's stored leaves and store it (ValueError for an empty batch): the
    local file, and with ``share`` its pieces in ``session``'s transaction (the caller commits)."""
    tree = MerkleTree.build(batch_leaves(session, batch))
    path = tree_path(settings, batch.batch_id)
    write_tree(path, tree)
    if share:
        session.execute(delete(BatchTreePiece).where(BatchTreePiece.batch_pk == batch.id))
        with open(path, "rb") as handle:
            seq = 0
            while data := handle.read(PIECE):
                session.execute(insert(BatchTreePiece).values(batch_pk=batch.id, seq=seq, data=data))
                seq += 1
    return tree


def fetch_shared_tree(session: Session, settings: Settings, batch: DeliveryBatch) -> bool:
    """Copy the batch's stored pieces to the local file (atomically); False when there are none."""
    path = tree_path(settings, batch.batch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".fetch{os.getpid()}")
    pieces = session.execute(
        select(BatchTreePiece.data)
        .where(BatchTreePiece.batch_pk == batch.id)
        .order_by(BatchTreePiece.seq)
        .execution_options(yield_per=4)  # a few MiB in memory at a time, whatever the tree's size
    ).scalars()
    found = False
    with open(tmp, "wb") as handle:
        for data in pieces:
            handle.write(data)
            found = True
        handle.flush()
        os.fsync(handle.fileno())
    if not found:
        tmp.unlink()
        return False
    os.replace(tmp, path)
    return True


class TreeFile:
    """Read-only view of a stored tree: root, leaf lookup and proofs straight from a memory map."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if self._map[: len(MAGIC)] != MAGIC:
            self._map.close()
            raise ValueError(f"{path} is not a batch tree file")
        self.leaf_count = int.from_bytes(self._map[len(MAGIC) : _HEADER])
        if len(self._map) != _HEADER + 32 * (2 * self.leaf_count - 1):
            self._map.close()
            raise ValueError(f"{path} is truncated")

    def __enter__(self) -> TreeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._map.close()

    def node(self, position: int) -> bytes:
        offset = _HEADER + 32 * position
        return self._map[offset : offset + 32]

    @property
    def root(self) -> bytes:
        return self.node(0)

    def position_of(self, leaf: bytes) -> int | None:
        """Tree position of ``leaf``, or None when the tree does not hold it (binary search)."""
        n = self.leaf_count
        lo, hi = n - 1, 2 * n - 1  # leaves, in descending order
        while lo < hi:
            mid = (lo + hi) // 2
            value = self.node(mid)
            if value == leaf:
                return mid
            if value > leaf:
                lo = mid + 1
            else:
                hi = mid
        return None

    def proof(self, position: int) -> list[bytes]:
        """Siblings from the leaf at ``position`` up to the root (OpenZeppelin ``getProof``)."""
        proof = []
        while position > 0:
            proof.append(self.node(position + 1 if position & 1 else position - 1))
            position = (position - 1) >> 1
        return proof


def open_batch_tree(session: Session, settings: Settings, batch: DeliveryBatch) -> TreeFile:
    """The batch's stored tree, rebuilt from the database when missing or not matching ``batch.root``."""
    if batch.root is None:
        raise ValueError(f"batch {batch.batch_id} has no root yet (state {batch.state})")
    path = tree_path(settings, batch.batch_id)
    try:
        tree = TreeFile(path)
    except (OSError, ValueError):
        tree = None
    if tree is not None and "0x" + tree.root.hex() == batch.root:
        return tree
    if tree is not None:
        tree.close()
        tree = None
    if fetch_shared_tree(session, settings, batch):  # closed on another host: its tree, once
        try:
            tree = TreeFile(path)
        except ValueError:
            tree = None
        if tree is not None and "0x" + tree.root.hex() == batch.root:
            return tree
        if tree is not None:
            tree.close()
    # Not shared (closed before trees were) or not matching: this host's own copy, from the leaves.
    rebuilt = build_batch_tree(session, settings, batch, share=False)
    if "0x" + rebuilt.root.hex() != batch.root:
        raise ValueError(f"batch {batch.batch_id}: stored records no longer produce its root {batch.root}")
    return TreeFile(path)
