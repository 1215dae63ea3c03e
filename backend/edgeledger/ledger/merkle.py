"""Merkle trees of delivery batches, byte-for-byte compatible with OpenZeppelin's `StandardMerkleTree`.

`MerkleTree.build(leaf_hashes)` gives the tree `@openzeppelin/merkle-tree` (1.0.x) builds with
`StandardMerkleTree.of(values, LEAF_TYPES)` when `leaf_hashes[i]` is the leaf of `values[i]`
(`edgeledger.ledger.delivery_leaf.leaf_hash`):

* leaves are sorted by hash (unsigned big-endian, a stable sort: equal leaves keep their input order);
* the tree is one array of 2n-1 nodes, the sorted leaves at its end in reverse order
  (`tree[2n-2-k]` is the k-th smallest leaf), `tree[i] = hash_pair(tree[2i+1], tree[2i+2])`, root `tree[0]`;
* `hash_pair(a, b) = keccak256(min(a, b) || max(a, b))`, so proofs verify with OpenZeppelin `MerkleProof`;
* a proof lists the siblings from the leaf up to (not including) the root.

Nodes live in one list of 32-byte `bytes` (about 80 bytes a node: 1,000,000 leaves are ~160 MB), proofs
share those objects. The hot loops are list comprehensions over slices of one tree level, one keccak call
per inner node; `all_proofs` builds every proof top-down (a node's proof is its sibling followed by its
parent's proof), one list per node and no per-element Python work.

`dump_standard` / `load_standard` read and write OpenZeppelin's "standard-v1" JSON (`tree.dump()` /
`StandardMerkleTree.load`), with values as OZ keeps them in JSON: `bytesN` as 0x-prefixed lower-case hex
and `uintN` as decimal strings.
"""

from __future__ import annotations

import gc
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from edgeledger.ledger.delivery_leaf import (
    LEAF_TYPES,
    LeafValues,
    leaf_hash,
    leaf_values_from_json,
    leaf_values_to_json,
)
from edgeledger.ledger.hashing import keccak_hasher

__all__ = [
    "STANDARD_FORMAT",
    "MerkleTree",
    "MultiProof",
    "dump_standard",
    "gc_paused",
    "hash_pair",
    "load_standard",
    "process_multiproof",
    "process_proof",
    "verify_multiproof",
    "verify_proof",
]

STANDARD_FORMAT = "standard-v1"


def _check_node(node: Any, what: str) -> None:
    if not isinstance(node, bytes) or len(node) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {node!r}")


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin's sorted-pair node hash: keccak256(min(a, b) || max(a, b))."""
    node: bytes = keccak_hasher(a + b if a < b else b + a).digest()
    return node


def process_proof(leaf: bytes, proof: Iterable[bytes]) -> bytes:
    """The root `proof` leads to from `leaf` (OpenZeppelin `MerkleProof.processProof`)."""
    _check_node(leaf, "leaf")
    k = keccak_hasher
    node = leaf
    for sibling in proof:
        _check_node(sibling, "proof element")
        node = k(node + sibling if node < sibling else sibling + node).digest()
    return node


def verify_proof(root: bytes, leaf: bytes, proof: Iterable[bytes]) -> bool:
    """Whether `proof` proves `leaf` against `root` (OpenZeppelin `MerkleProof.verify`)."""
    _check_node(root, "root")
    return process_proof(leaf, proof) == root


class MultiProof(NamedTuple):
    """OpenZeppelin's multiproof, over leaf hashes.

    `leaves` are in the order `MerkleProof.multiProofVerify` wants them (tree index descending, as OZ's
    `getMultiProof` returns them); `indices[j]` is the input index of `leaves[j]`.
    """

    leaves: list[bytes]
    proof: list[bytes]
    proof_flags: list[bool]
    indices: list[int]


def process_multiproof(leaves: Sequence[bytes], proof: Sequence[bytes], proof_flags: Sequence[bool]) -> bytes:
    """The root a multiproof leads to (OpenZeppelin `MerkleProof.processMultiProof`)."""
    for leaf in leaves:
        _check_node(leaf, "leaf")
    for node in proof:
        _check_node(node, "proof element")
    if len(proof) < sum(1 for flag in proof_flags if not flag):
        raise ValueError("invalid multiproof format")
    if len(leaves) + len(proof) != len(proof_flags) + 1:
        raise ValueError("leaves and multiproof are not compatible")
    stack = deque(leaves)
    rest = deque(proof)
    try:
        for flag in proof_flags:
            a = stack.popleft()
            b = stack.popleft() if flag else rest.popleft()
            stack.append(hash_pair(a, b))
    except IndexError:
        raise ValueError("invalid multiproof: its flags consume more nodes than it has") from None
    return stack.pop() if stack else rest.popleft()


def verify_multiproof(
    root: bytes, leaves: Sequence[bytes], proof: Sequence[bytes], proof_flags: Sequence[bool]
) -> bool:
    """Whether a multiproof proves `leaves` against `root` (OpenZeppelin `MerkleProof.multiProofVerify`)."""
    _check_node(root, "root")
    return process_multiproof(leaves, proof, proof_flags) == root


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (restored afterwards if it was on), around code that allocates
    millions of containers none of which can be part of a cycle.

    With the collector on, such allocations trigger full collections that walk every live container of
    the process: `all_proofs` allocates one list per tree node (for a 1,000,000-leaf batch the collections
    took several times the proofs' own time), settlement builds a million receipts.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _levels(count: int) -> Iterable[tuple[int, int]]:
    """(start, end) of each level of a heap-ordered array of `count` nodes, root level first."""
    start = 0
    while start < count:
        yield start, min(2 * start + 1, count)
        start = 2 * start + 1


class MerkleTree:
    """A sorted-pair Merkle tree in OpenZeppelin's array layout, over precomputed leaf hashes."""

    __slots__ = ("_nodes", "_tree_index")

    def __init__(self, nodes: list[bytes], tree_index: array[int]) -> None:
        """Internal: use `build`, `from_nodes` or `load_standard`."""
        self._nodes = nodes
        self._tree_index = tree_index

    @classmethod
    def build(cls, leaf_hashes: Sequence[bytes], *, sort_leaves: bool = True) -> MerkleTree:
        """The tree `StandardMerkleTree.of` builds from values whose leaves are `leaf_hashes` (in order).

        `sort_leaves=False` keeps the input order, as OZ's `{sortLeaves: false}` does.
        """
        hashes = leaf_hashes if isinstance(leaf_hashes, list) else list(leaf_hashes)
        n = len(hashes)
        if n == 0:
            raise ValueError("a Merkle tree needs at least one leaf")
        if set(map(type, hashes)) != {bytes} or set(map(len, hashes)) != {32}:
            bad = next(h for h in hashes if not isinstance(h, bytes) or len(h) != 32)
            raise ValueError(f"leaf hashes must be 32-byte bytes, got {bad!r}")
        size = 2 * n - 1
        # The k-th leaf in (stable) hash order sits at tree index size-1-k.
        order = sorted(range(n), key=hashes.__getitem__) if sort_leaves else range(n)
        tree_index = array("q", bytes(8 * n))
        for i, t in zip(order, range(size - 1, n - 2, -1), strict=True):
            tree_index[i] = t
        nodes: list[bytes] = [b""] * (n - 1)
        nodes += map(hashes.__getitem__, reversed(order))
        del order
        k = keccak_hasher
        # Inner nodes level by level, deepest first; the inner nodes of one level are a contiguous index
        # range [start, end) whose children are exactly [2*start+1, 2*end+1).
        for start, end in reversed(list(_levels(n - 1))):
            lefts = nodes[2 * start + 1 : 2 * end + 1 : 2]
            rights = nodes[2 * start + 2 : 2 * end + 1 : 2]
            pairs = zip(lefts, rights, strict=True)
            nodes[start:end] = [k(a + b if a < b else b + a).digest() for a, b in pairs]
        return cls(nodes, tree_index)

    @classmethod
    def from_nodes(cls, nodes: Sequence[bytes], tree_index: Sequence[int]) -> MerkleTree:
        """A tree from its node array and the tree index of each input leaf, validated as OZ `load` does.

        Every node must be 32 bytes, every inner node the pair hash of its children, and the tree indices
        distinct leaf positions.
        """
        nodes = list(nodes)
        if not nodes or len(nodes) % 2 == 0:
            raise ValueError(f"a tree array has an odd, non-zero length, got {len(nodes)}")
        for pos, node in enumerate(nodes):
            _check_node(node, f"tree node {pos}")
        n = (len(nodes) + 1) // 2
        for i in range(n - 1):
            if nodes[i] != hash_pair(nodes[2 * i + 1], nodes[2 * i + 2]):
                raise ValueError(f"tree node {i} is not the hash of its children")
        if len(tree_index) != n:
            raise ValueError(f"the tree has {n} leaves but {len(tree_index)} tree indices were given")
        if len(set(tree_index)) != n or not all(n - 1 <= t < len(nodes) for t in tree_index):
            raise ValueError("tree indices must be distinct leaf positions")
        return cls(nodes, array("q", tree_index))

    # --- reading --------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of leaves."""
        return len(self._tree_index)

    @property
    def root(self) -> bytes:
        return self._nodes[0]

    @property
    def nodes(self) -> list[bytes]:
        """A copy of OZ's `tree` array: 2n-1 nodes, root first, leaves at the end."""
        return list(self._nodes)

    def tree_index(self, index: int) -> int:
        """Position in `nodes` of the leaf of input `index` (OZ's `treeIndex`)."""
        return int(self._tree_index[self._input_index(index)])

    def leaf(self, index: int) -> bytes:
        """The leaf hash of input `index`."""
        return self._nodes[self.tree_index(index)]

    def _input_index(self, index: int) -> int:
        if not 0 <= index < len(self._tree_index):
            raise IndexError(f"leaf index {index} out of range for {len(self._tree_index)} leaves")
        return index

    # --- proofs ---------------------------------------------------------------------------------------

    def proof(self, index: int) -> list[bytes]:
        """The proof of input leaf `index`: siblings from the leaf up to the root (OZ `getProof(index)`)."""
        nodes = self._nodes
        t = self.tree_index(index)
        proof = []
        while t > 0:
            proof.append(nodes[t + 1 if t & 1 else t - 1])
            t = (t - 1) >> 1
        return proof

    def all_proofs(self) -> list[list[bytes]]:
        """`[self.proof(i) for i in range(len(self))]`, computed top-down level by level.

        A node's proof is its sibling followed by its parent's proof; each level's proofs come from one
        pair of comprehensions over the level (siblings are adjacent: left children have odd indices).
        Only one level of inner-node proofs is alive at a time.
        """
        nodes = self._nodes
        n = len(self._tree_index)
        size = len(nodes)
        first_leaf = n - 1
        if n == 1:
            return [[]]
        by_leaf: list[Any] = [None] * n  # proofs by tree index - first_leaf
        parents: list[list[bytes]] = [[]]  # proofs of the previous level's nodes
        with gc_paused():
            for start, end in _levels(size):
                if start == 0:
                    continue
                level = nodes[start:end]
                proofs: list[Any] = [None] * (end - start)
                proofs[0::2] = [[right, *up] for right, up in zip(level[1::2], parents, strict=False)]
                proofs[1::2] = [[left, *up] for left, up in zip(level[0::2], parents, strict=False)]
                if end > first_leaf:
                    lo = max(start, first_leaf)
                    by_leaf[lo - first_leaf : end - first_leaf] = proofs[lo - start :]
                parents = proofs
            del parents
            return list(map(by_leaf.__getitem__, map(first_leaf.__rsub__, self._tree_index)))

    def verify(self, leaf: bytes, proof: Iterable[bytes]) -> bool:
        """Whether `proof` proves `leaf` against this tree's root."""
        return verify_proof(self.root, leaf, proof)

    def multiproof(self, indices: Iterable[int]) -> MultiProof:
        """OpenZeppelin's multiproof (`getMultiProof`) of the input leaves `indices`."""
        nodes = self._nodes
        inputs = list(indices)
        by_tree_index = {self.tree_index(i): i for i in inputs}
        if len(by_tree_index) != len(inputs):
            raise ValueError("cannot prove a duplicated index")
        order = sorted(by_tree_index, reverse=True)
        stack = deque(order)
        proof: list[bytes] = []
        flags: list[bool] = []
        while stack and stack[0] > 0:
            j = stack.popleft()
            s = j + 1 if j & 1 else j - 1
            if stack and stack[0] == s:
                flags.append(True)
                stack.popleft()
            else:
                flags.append(False)
                proof.append(nodes[s])
            stack.append((j - 1) >> 1)
        if not order:
            proof.append(nodes[0])
        return MultiProof([nodes[t] for t in order], proof, flags, [by_tree_index[t] for t in order])

    def render(self) -> str:
        """The tree drawn as OZ's `render()` draws it (`index) 0xhash` per node, depth first)."""
        nodes = self._nodes
        stack: list[tuple[int, tuple[int, ...]]] = [(0, ())]
        lines = []
        while stack:
            i, path = stack.pop()
            prefix = "".join(("   ", "│  ")[p] for p in path[:-1])
            prefix += "".join(("└─ ", "├─ ")[p] for p in path[-1:])
            lines.append(f"{prefix}{i}) 0x{nodes[i].hex()}")
            if 2 * i + 2 < len(nodes):
                stack.append((2 * i + 2, (*path, 0)))
                stack.append((2 * i + 1, (*path, 1)))
        return "\n".join(lines)


# --- OpenZeppelin "standard-v1" JSON -----------------------------------------------------------------


def dump_standard(tree: MerkleTree, values: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """OZ's `StandardMerkleTree.dump()` of `tree` built from `values` (records in input order).

    `{"format": "standard-v1", "leafEncoding": LEAF_TYPES, "tree": ["0x..", ...],
    "values": [{"value": [...], "treeIndex": t}, ...]}`; `bytesN` values as 0x-hex, `uintN` as decimal
    strings. Checks that `values[i]` hashes to the tree's leaf i.
    """
    if len(values) != len(tree):
        raise ValueError(f"the tree has {len(tree)} leaves but {len(values)} values were given")
    out_values = []
    for i, value in enumerate(values):
        if leaf_hash(value) != tree.leaf(i):
            raise ValueError(f"values[{i}] is not the tree's leaf {i}")
        out_values.append({"value": leaf_values_to_json(value), "treeIndex": tree.tree_index(i)})
    return {
        "format": STANDARD_FORMAT,
        "leafEncoding": list(LEAF_TYPES),
        "tree": ["0x" + node.hex() for node in tree._nodes],
        "values": out_values,
    }


def _node_from_hex(text: Any, where: str) -> bytes:
    try:
        if isinstance(text, str) and text.startswith("0x") and len(text) == 66:
            return bytes.fromhex(text[2:])
    except ValueError:
        pass
    raise ValueError(f"{where} must be a 0x-prefixed 32-byte hex string, got {text!r}")


def load_standard(data: Mapping[str, Any]) -> tuple[MerkleTree, list[LeafValues]]:
    """Tree and values of an OZ "standard-v1" dump over `LEAF_TYPES`, validated as `StandardMerkleTree.load`.

    Uints may be decimal strings, 0x-hex strings or JSON integers (all of which OZ accepts); `bytesN` must
    be 0x-hex of exactly N bytes.
    """
    if data.get("format") != STANDARD_FORMAT:
        raise ValueError(f"unknown format {data.get('format')!r}")
    if list(data.get("leafEncoding") or ()) != list(LEAF_TYPES):
        raise ValueError(f"leaf encoding must be {list(LEAF_TYPES)}, got {data.get('leafEncoding')!r}")
    raw_tree = data.get("tree")
    raw_values = data.get("values")
    if not isinstance(raw_tree, list) or not isinstance(raw_values, list):
        raise ValueError("a standard-v1 dump has a 'tree' list and a 'values' list")
    nodes = [_node_from_hex(node, f"tree[{pos}]") for pos, node in enumerate(raw_tree)]
    values: list[LeafValues] = []
    tree_index: list[int] = []
    for i, entry in enumerate(raw_values):
        value = entry.get("value") if isinstance(entry, Mapping) else None
        t = entry.get("treeIndex") if isinstance(entry, Mapping) else None
        if not isinstance(value, list) or type(t) is not int:
            raise ValueError(f"values[{i}] must be {{'value': [...], 'treeIndex': int}}, got {entry!r}")
        try:
            values.append(leaf_values_from_json(value))
        except ValueError as exc:
            raise ValueError(f"values[{i}]: {exc}") from None
        tree_index.append(t)
    tree = MerkleTree.from_nodes(nodes, tree_index)
    for i, value in enumerate(values):
        if leaf_hash(value) != tree.leaf(i):
            raise ValueError(f"values[{i}] does not hash to tree node {tree_index[i]}")
    return tree, values
