"""Delivery leaves and Merkle trees (docs/delivery-leaf.md), checked against the reference implementations.

* leaf encoding against `eth_abi.encode`, Keccak-256 against pycryptodome's;
* trees, proofs, multiproofs, `render` and the standard-v1 dump against OpenZeppelin's
  `@openzeppelin/merkle-tree` (the project's node_modules), run under node through
  tests/backend/js/oz_merkle.mjs, and against the fixed vectors it produced (tests/backend/js/vectors.json,
  written by make_vectors.mjs);
* OZ's `StandardMerkleTree.load(ourDump).verify(...)` and `StandardMerkleTree.verify(root, types, value,
  proof)` accept our proofs and reject altered ones.
"""

from __future__ import annotations

import copy
import gc
import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from Crypto.Hash import keccak as cryptodome_keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeledger.ledger.delivery_leaf import (
    ENCODED_LEAF_SIZE,
    LEAF_FIELDS,
    LEAF_SOLIDITY_NAMES,
    LEAF_TYPES,
    LeafValues,
    encode_leaf_values,
    keccak256,
    leaf_hash,
    leaf_hash_encoded,
    leaf_hashes,
    leaf_hashes_encoded,
    leaf_values_from_json,
    leaf_values_to_json,
)
from edgeledger.ledger.merkle import (
    MerkleTree,
    dump_standard,
    hash_pair,
    load_standard,
    process_multiproof,
    process_proof,
    verify_multiproof,
    verify_proof,
)

ROOT = Path(__file__).resolve().parents[2]
JS = Path(__file__).resolve().parent / "js"
OZ_SCRIPT = JS / "oz_merkle.mjs"
VECTORS = JS / "vectors.json"
OZ_PACKAGE = ROOT / "node_modules" / "@openzeppelin" / "merkle-tree" / "package.json"

UINT_MAX = {"uint8": 2**8 - 1, "uint16": 2**16 - 1, "uint64": 2**64 - 1, "uint256": 2**256 - 1}


def reference_keccak(data: bytes) -> bytes:
    return cryptodome_keccak.new(digest_bits=256, data=data).digest()


def reference_leaf(values: LeafValues) -> bytes:
    return reference_keccak(reference_keccak(eth_abi.encode(list(LEAF_TYPES), list(values))))


def random_values(rng: random.Random, extreme: bool = False) -> LeafValues:
    """Random record values; with `extreme`, every field is randomly its minimum, maximum or random."""
    fields: list[Any] = []
    for type_ in LEAF_TYPES:
        pick = rng.choice(("min", "max", "rand")) if extreme else "rand"
        if type_.startswith("bytes"):
            size = int(type_[5:])
            fields.append({"min": bytes(size), "max": b"\xff" * size, "rand": rng.randbytes(size)}[pick])
        else:
            top = UINT_MAX[type_]
            fields.append({"min": 0, "max": top, "rand": rng.randint(0, top)}[pick])
    return LeafValues(*fields)


def h(node: bytes) -> str:
    return "0x" + node.hex()


def hexes(nodes: list[bytes]) -> list[str]:
    return ["0x" + node.hex() for node in nodes]


def flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    return data[:pos] + bytes([data[pos] ^ mask]) + data[pos + 1 :]


leaf_values_st = st.builds(
    LeafValues,
    *(
        st.binary(min_size=int(t[5:]), max_size=int(t[5:]))
        if t.startswith("bytes")
        else st.integers(min_value=0, max_value=UINT_MAX[t])
        for t in LEAF_TYPES
    ),
)


# --- leaf ----------------------------------------------------------------------------------------------


def test_leaf_types_and_fields_match_the_doc() -> None:
    doc = (ROOT / "docs" / "delivery-leaf.md").read_text()
    types_line = re.search(r'^\["bytes32".*\]$', doc, re.MULTILINE)
    assert types_line is not None
    assert tuple(json.loads(types_line.group(0))) == LEAF_TYPES
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (\w+) \|", doc, re.MULTILINE)
    assert [(int(num), name, type_) for num, name, type_ in rows] == [
        (pos + 1, name, type_)
        for pos, (name, type_) in enumerate(zip(LEAF_SOLIDITY_NAMES, LEAF_TYPES, strict=True))
    ]
    snake = [re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() for name in LEAF_SOLIDITY_NAMES]
    assert tuple(snake) == LEAF_FIELDS


def test_keccak_is_ethereum_keccak256() -> None:
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    rng = random.Random(7)
    for size in (0, 1, 31, 32, 33, 64, 135, 136, 137, 352, 1000):
        data = rng.randbytes(size)
        assert keccak256(data) == reference_keccak(data)


def test_encode_matches_eth_abi_on_random_values() -> None:
    rng = random.Random(20240701)
    for i in range(600):
        values = random_values(rng, extreme=i % 2 == 1)
        encoded = encode_leaf_values(values)
        assert len(encoded) == ENCODED_LEAF_SIZE
        assert encoded == eth_abi.encode(list(LEAF_TYPES), list(values))
        assert leaf_hash(values) == leaf_hash_encoded(encoded) == reference_leaf(values)


@settings(max_examples=200, deadline=None)
@given(leaf_values_st)
def test_encode_matches_eth_abi_property(values: LeafValues) -> None:
    assert encode_leaf_values(values) == eth_abi.encode(list(LEAF_TYPES), list(values))
    assert encode_leaf_values(tuple(values)) == encode_leaf_values(list(values))


def test_batch_helpers_match_single_calls() -> None:
    rng = random.Random(3)
    records = [random_values(rng) for _ in range(50)]
    assert leaf_hashes(records) == [leaf_hash(r) for r in records]
    assert leaf_hashes_encoded(map(encode_leaf_values, records)) == [leaf_hash(r) for r in records]


def _replace(values: LeafValues, field: str, new: Any) -> list[Any]:
    out = list(values)
    out[LEAF_FIELDS.index(field)] = new
    return out


GOOD = LeafValues(
    b"\x01" * 32, b"\x02" * 32, 1719835200123, b"FRA56-P1".ljust(16, b"\0"), b"DE", 42, b"\x03" * 32,
    1048576, 200, 1, b"\x04" * 32,
)  # fmt: skip


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("source_id", b"\x01" * 31, "source_id (bytes32) must be exactly 32 bytes, got 31"),
        ("request_id", b"\x01" * 33, "request_id (bytes32) must be exactly 32 bytes, got 33"),
        ("edge_location", b"FRA56-P1", "edge_location (bytes16) must be exactly 16 bytes, got 8"),
        ("country", b"D", "country (bytes2) must be exactly 2 bytes, got 1"),
        ("country", "DE", "country (bytes2) must be bytes, got str"),
        ("merchant_id", memoryview(bytes(32)), "merchant_id (bytes32) must be bytes, got memoryview"),
        ("client_commitment", "x" * 32, "client_commitment (bytes32) must be bytes, got str"),
        ("client_commitment", None, "client_commitment (bytes32) must be bytes, got NoneType"),
        ("timestamp_ms", -1, "timestamp_ms (uint64) out of range [0, 2**64): -1"),
        ("timestamp_ms", 2**64, "timestamp_ms (uint64) out of range"),
        ("asset_id", 2**256, "asset_id (uint256) out of range"),
        ("asset_id", -5, "asset_id (uint256) out of range"),
        ("bytes_delivered", 1.0, "bytes_delivered (uint64) must be an int, got float"),
        ("bytes_delivered", "10", "bytes_delivered (uint64) must be an int, got str"),
        ("status", 65536, "status (uint16) out of range [0, 2**16): 65536"),
        ("cache_result", 256, "cache_result (uint8) out of range [0, 2**8): 256"),
        ("cache_result", True, "cache_result (uint8) must be an int, got bool"),
        ("status", False, "status (uint16) must be an int, got bool"),
    ],
)
def test_encode_rejects_invalid_values(field: str, bad: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        encode_leaf_values(_replace(GOOD, field, bad))
    with pytest.raises(ValueError, match=re.escape(message)):
        leaf_hash(_replace(GOOD, field, bad))


def test_encode_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="must have 11 fields, got 10"):
        encode_leaf_values(GOOD[:10])
    with pytest.raises(ValueError, match="must have 11 fields, got 12"):
        encode_leaf_values((*GOOD, 0))
    with pytest.raises(ValueError, match="must be a sequence"):
        encode_leaf_values(None)  # type: ignore[arg-type]


def test_encode_accepts_what_eth_abi_accepts() -> None:
    import enum

    class Cache(enum.IntEnum):
        HIT = 1

    assert encode_leaf_values(_replace(GOOD, "cache_result", Cache.HIT)) == encode_leaf_values(GOOD)
    with_bytearray = _replace(GOOD, "merchant_id", bytearray(GOOD.merchant_id))
    assert encode_leaf_values(with_bytearray) == encode_leaf_values(GOOD)
    assert eth_abi.encode(list(LEAF_TYPES), with_bytearray) == encode_leaf_values(GOOD)


def test_json_values_round_trip() -> None:
    rng = random.Random(11)
    for i in range(50):
        values = random_values(rng, extreme=i % 2 == 0)
        as_json = leaf_values_to_json(values)
        assert all(isinstance(item, str) for item in as_json)
        assert leaf_values_from_json(as_json) == values
    # uints may also be 0x-hex strings or JSON integers, as OZ accepts them
    mixed = leaf_values_to_json(GOOD)
    mixed[2], mixed[5] = "0x" + (1719835200123).to_bytes(8).hex(), 42
    assert leaf_values_from_json(mixed) == GOOD
    bad = leaf_values_to_json(GOOD)
    bad[4] = "0x44"
    with pytest.raises(ValueError, match=r"country \(bytes2\) must be exactly 2 bytes, got 1"):
        leaf_values_from_json(bad)
    bad = leaf_values_to_json(GOOD)
    bad[8] = "65536"
    with pytest.raises(ValueError, match=r"status \(uint16\) out of range"):
        leaf_values_from_json(bad)


# --- trees: small known shapes ------------------------------------------------------------------------


def test_single_leaf_tree() -> None:
    leaf = leaf_hash(GOOD)
    tree = MerkleTree.build([leaf])
    assert tree.root == leaf
    assert tree.nodes == [leaf]
    assert tree.proof(0) == []
    assert tree.all_proofs() == [[]]
    assert tree.tree_index(0) == 0
    assert verify_proof(tree.root, leaf, [])
    assert tree.render() == f"0) {h(leaf)}"


def test_two_leaf_tree() -> None:
    a, b = keccak256(b"a"), keccak256(b"b")
    tree = MerkleTree.build([a, b])
    assert tree.root == keccak256(min(a, b) + max(a, b)) == hash_pair(a, b) == hash_pair(b, a)
    assert tree.nodes == [tree.root, max(a, b), min(a, b)]
    assert tree.proof(0) == [b] and tree.proof(1) == [a]
    assert tree.all_proofs() == [[b], [a]]


def test_three_leaf_tree_layout() -> None:
    leaves = [keccak256(bytes([i])) for i in range(3)]
    s0, s1, s2 = sorted(leaves)
    tree = MerkleTree.build(leaves)
    n1 = hash_pair(s1, s0)
    assert tree.nodes == [hash_pair(n1, s2), n1, s2, s1, s0]
    for i, leaf in enumerate(leaves):
        assert tree.nodes[tree.tree_index(i)] == leaf == tree.leaf(i)
    by_leaf = {s0: [s1, s2], s1: [s0, s2], s2: [n1]}
    assert tree.all_proofs() == [by_leaf[leaf] for leaf in leaves]
    assert tree.render() == "\n".join(
        [f"0) {h(tree.root)}", f"├─ 1) {h(n1)}", f"│  ├─ 3) {h(s1)}", f"│  └─ 4) {h(s0)}", f"└─ 2) {h(s2)}"]
    )


def test_unsorted_tree_keeps_input_order() -> None:
    leaves = [keccak256(bytes([i])) for i in range(5)]
    tree = MerkleTree.build(leaves, sort_leaves=False)
    assert tree.nodes[4:] == leaves[::-1]
    assert [tree.tree_index(i) for i in range(5)] == [8, 7, 6, 5, 4]
    for i, proof in enumerate(tree.all_proofs()):
        assert verify_proof(tree.root, leaves[i], proof)


def test_duplicate_leaves_keep_input_order() -> None:
    a, b = keccak256(b"a"), keccak256(b"b")
    tree = MerkleTree.build([a, b, a])
    # stable sort: the first `a` comes first in sorted order, and the k-th sorted leaf sits at 4 - k
    indices = [tree.tree_index(i) for i in range(3)]
    assert sorted(indices) == [2, 3, 4]
    assert indices[0] == indices[2] + 1
    for i, proof in enumerate(tree.all_proofs()):
        assert verify_proof(tree.root, [a, b, a][i], proof)


def test_build_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        MerkleTree.build([])
    with pytest.raises(ValueError, match="32-byte"):
        MerkleTree.build([b"\x00" * 31])
    with pytest.raises(ValueError, match="32-byte"):
        MerkleTree.build([keccak256(b"a"), "0x" + "00" * 32])  # type: ignore[list-item]
    tree = MerkleTree.build([keccak256(b"a")])
    with pytest.raises(IndexError):
        tree.proof(1)
    with pytest.raises(IndexError):
        tree.tree_index(-1)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 257, 1000])
def test_all_proofs_equal_single_proofs_and_verify(count: int) -> None:
    rng = random.Random(count)
    leaves = [rng.randbytes(32) for _ in range(count)]
    tree = MerkleTree.build(leaves)
    assert len(tree) == count and len(tree.nodes) == 2 * count - 1
    for i in range(count - 1):
        assert tree.nodes[i] == hash_pair(tree.nodes[2 * i + 1], tree.nodes[2 * i + 2])
    assert tree.nodes[count - 1 :] == sorted(leaves, reverse=True)
    proofs = tree.all_proofs()
    assert proofs == [tree.proof(i) for i in range(count)]
    for leaf, proof in zip(leaves, proofs, strict=True):
        assert verify_proof(tree.root, leaf, proof)
        assert process_proof(leaf, proof) == tree.root
        assert tree.verify(leaf, proof)


def test_all_proofs_restores_the_garbage_collector() -> None:
    tree = MerkleTree.build([keccak256(bytes([i])) for i in range(10)])
    assert gc.isenabled()
    tree.all_proofs()
    assert gc.isenabled()
    gc.disable()
    try:
        tree.all_proofs()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_verify_proof_rejects_wrong_sizes() -> None:
    leaf = keccak256(b"a")
    with pytest.raises(ValueError, match="proof element must be 32 bytes"):
        verify_proof(leaf, leaf, [b"\x00"])
    with pytest.raises(ValueError, match="root must be 32 bytes"):
        verify_proof(b"", leaf, [])


def test_multiproofs_verify_and_reject_tampering() -> None:
    rng = random.Random(5)
    leaves = [rng.randbytes(32) for _ in range(23)]
    tree = MerkleTree.build(leaves)
    for indices in ([0], [22], [0, 1, 2], [3, 17, 9, 11], list(range(23)), []):
        mp = tree.multiproof(indices)
        assert sorted(mp.indices) == sorted(indices)
        assert mp.leaves == [leaves[i] for i in mp.indices]
        assert verify_multiproof(tree.root, mp.leaves, mp.proof, mp.proof_flags)
        assert process_multiproof(mp.leaves, mp.proof, mp.proof_flags) == tree.root
        if mp.proof:
            assert not verify_multiproof(
                tree.root, mp.leaves, [flip(mp.proof[0], 0), *mp.proof[1:]], mp.proof_flags
            )
        if mp.leaves:
            assert not verify_multiproof(
                tree.root, [flip(mp.leaves[0], 31), *mp.leaves[1:]], mp.proof, mp.proof_flags
            )
    with pytest.raises(ValueError, match="duplicated"):
        tree.multiproof([1, 1])
    with pytest.raises(ValueError, match="not compatible"):
        process_multiproof([leaves[0]], [], [True])
    with pytest.raises(ValueError, match="invalid multiproof format"):
        process_multiproof(leaves[:2], leaves[2:3], [False, False])
    with pytest.raises(ValueError, match="invalid multiproof"):
        process_multiproof(leaves[:2], leaves[2:3], [True, True])


# --- property: every proof verifies, every altered byte fails ----------------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    records=st.lists(leaf_values_st, min_size=1, max_size=40),
    data=st.data(),
)
def test_property_proofs_verify_and_any_flipped_byte_fails(records: list[LeafValues], data: Any) -> None:
    tree = MerkleTree.build(leaf_hashes(records))
    proofs = tree.all_proofs()
    for values, proof in zip(records, proofs, strict=True):
        assert verify_proof(tree.root, leaf_hash(values), proof)

    i = data.draw(st.integers(0, len(records) - 1), label="record")
    mask = data.draw(st.integers(1, 255), label="xor mask")
    encoded, proof, root = encode_leaf_values(records[i]), proofs[i], tree.root
    for pos in range(ENCODED_LEAF_SIZE):
        assert not verify_proof(root, leaf_hash_encoded(flip(encoded, pos, mask)), proof)
    leaf = leaf_hash_encoded(encoded)
    for k, node in enumerate(proof):
        for pos in range(32):
            altered = [*proof[:k], flip(node, pos, mask), *proof[k + 1 :]]
            assert not verify_proof(root, leaf, altered)
    for pos in range(32):
        assert not verify_proof(flip(root, pos, mask), leaf, proof)
    if proof:  # a proof with one sibling dropped or repeated proves nothing
        assert not verify_proof(root, leaf, proof[:-1])
        assert not verify_proof(root, leaf, [*proof, proof[-1]])


@settings(max_examples=30, deadline=None)
@given(records=st.lists(leaf_values_st, min_size=1, max_size=12), data=st.data())
def test_property_any_altered_field_fails(records: list[LeafValues], data: Any) -> None:
    tree = MerkleTree.build(leaf_hashes(records))
    i = data.draw(st.integers(0, len(records) - 1), label="record")
    proof = tree.proof(i)
    for pos, type_ in enumerate(LEAF_TYPES):
        altered = list(records[i])
        if type_.startswith("bytes"):
            altered[pos] = flip(altered[pos], data.draw(st.integers(0, len(altered[pos]) - 1)))
        else:
            altered[pos] = altered[pos] ^ (1 << data.draw(st.integers(0, int(type_[4:]) - 1)))
        assert not verify_proof(tree.root, leaf_hash(altered), proof)


# --- standard-v1 dump ----------------------------------------------------------------------------------


def test_dump_and_load_round_trip() -> None:
    rng = random.Random(9)
    records = [random_values(rng) for _ in range(13)]
    tree = MerkleTree.build(leaf_hashes(records))
    dump = dump_standard(tree, records)
    assert dump["format"] == "standard-v1" and dump["leafEncoding"] == list(LEAF_TYPES)
    assert dump["tree"] == hexes(tree.nodes)
    assert [entry["treeIndex"] for entry in dump["values"]] == [tree.tree_index(i) for i in range(13)]
    loaded, values = load_standard(json.loads(json.dumps(dump)))
    assert values == records and loaded.nodes == tree.nodes and loaded.all_proofs() == tree.all_proofs()
    with pytest.raises(ValueError, match="is not the tree's leaf 0"):
        dump_standard(tree, [records[1], *records[1:]])
    with pytest.raises(ValueError, match="13 leaves but 12 values"):
        dump_standard(tree, records[:12])


@pytest.mark.parametrize(
    ("alter", "message"),
    [
        (lambda d: d.update(format="standard-v2"), "unknown format"),
        (lambda d: d.update(leafEncoding=d["leafEncoding"][:-1]), "leaf encoding must be"),
        (lambda d: d["tree"].__setitem__(0, "0x" + "00" * 32), "tree node 0 is not the hash of its children"),
        (lambda d: d["tree"].__setitem__(3, d["tree"][3][:-2]), r"tree\[3\] must be a 0x-prefixed 32-byte"),
        (lambda d: d["tree"].__setitem__(3, "0x" + "zz" * 32), r"tree\[3\] must be a 0x-prefixed 32-byte"),
        (lambda d: d["tree"].pop(), "odd, non-zero length"),
        (lambda d: d["values"][2]["value"].__setitem__(8, "201"), r"values\[2\] does not hash"),
        (lambda d: d["values"][2]["value"].__setitem__(4, "0x44"), r"values\[2\]: leaf field 4 country"),
        (lambda d: d["values"][2].__setitem__("treeIndex", 0), "distinct leaf positions"),
        (lambda d: d["values"].pop(), "5 leaves but 4 tree indices"),
    ],
)
def test_load_rejects_invalid_dumps(alter: Any, message: str) -> None:
    rng = random.Random(4)
    records = [random_values(rng) for _ in range(5)]
    dump = dump_standard(MerkleTree.build(leaf_hashes(records)), records)
    alter(dump)
    with pytest.raises(ValueError, match=message):
        load_standard(dump)


# --- vectors produced by @openzeppelin/merkle-tree -----------------------------------------------------


VECTOR_DATA = json.loads(VECTORS.read_text())


def test_vectors_come_from_openzeppelin() -> None:
    assert "@openzeppelin/merkle-tree" in VECTOR_DATA["generator"]
    assert tuple(VECTOR_DATA["leafEncoding"]) == LEAF_TYPES
    assert {len(case["values"]) for case in VECTOR_DATA["cases"].values()} >= {1, 2, 3, 8}


@pytest.mark.parametrize("name", sorted(VECTOR_DATA["cases"]))
def test_vectors(name: str) -> None:
    case = VECTOR_DATA["cases"][name]
    records = [leaf_values_from_json(value) for value in case["values"]]
    leaves = [leaf_hash(r) for r in records]
    assert hexes(leaves) == case["leafHashes"]
    tree = MerkleTree.build(leaves, sort_leaves=case["sortLeaves"])
    assert h(tree.root) == case["root"]
    assert hexes(tree.nodes) == case["dump"]["tree"]
    assert [hexes(p) for p in tree.all_proofs()] == case["proofs"]
    assert [hexes(tree.proof(i)) for i in range(len(records))] == case["proofs"]
    assert tree.render() == case["render"]
    assert dump_standard(tree, records) == case["dump"]
    assert json.dumps(dump_standard(tree, records)) == json.dumps(case["dump"])
    loaded, values = load_standard(case["dump"])
    assert values == records and loaded.nodes == tree.nodes
    for mp in case["multiproofs"]:
        ours = tree.multiproof(mp["indices"])
        assert [leaf_values_to_json(records[i]) for i in ours.indices] == mp["leaves"]
        assert hexes(ours.proof) == mp["proof"] and ours.proof_flags == mp["proofFlags"]
        assert verify_multiproof(tree.root, ours.leaves, ours.proof, ours.proof_flags)


# --- live comparison with @openzeppelin/merkle-tree under node ---------------------------------------


@pytest.fixture(scope="module")
def oz() -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (scripts/bootstrap.sh needs it too)")
    if not OZ_PACKAGE.exists():
        pytest.skip("@openzeppelin/merkle-tree is not installed: run scripts/bootstrap.sh")

    def run(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        done = subprocess.run(
            [node, str(OZ_SCRIPT)],
            input=json.dumps(requests),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


def _records(rng: random.Random, count: int) -> list[LeafValues]:
    records = [random_values(rng, extreme=rng.random() < 0.1) for _ in range(count)]
    if count >= 4:  # a duplicated record, as OZ allows
        records[count // 2] = records[1]
    return records


def test_openzeppelin_builds_the_same_trees(oz: Any) -> None:
    rng = random.Random(1234)
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 33, 64, 101, 300]
    batches = [_records(rng, n) for n in sizes]
    multis = [sorted(rng.sample(range(n), k=min(n, 3))) for n in sizes]
    requests = [
        {
            "op": "build",
            "types": list(LEAF_TYPES),
            "values": [leaf_values_to_json(r) for r in records],
            "multiproofs": [indices, []],
        }
        for records, indices in zip(batches, multis, strict=True)
    ] + [
        {
            "op": "build",
            "types": list(LEAF_TYPES),
            "values": [leaf_values_to_json(r) for r in records],
            "sortLeaves": False,
        }
        for records in batches[:: len(batches) // 4]
    ]
    responses = oz(requests)
    for records, indices, got in zip(batches, multis, responses, strict=False):
        assert "error" not in got, got
        tree = MerkleTree.build(leaf_hashes(records))
        proofs = [hexes(p) for p in tree.all_proofs()]
        assert got["leafHashes"] == hexes(leaf_hashes(records))
        assert got["root"] == h(tree.root)
        assert got["tree"] == hexes(tree.nodes)
        assert got["proofs"] == proofs
        # getProof(value) finds the value by its leaf hash: for a duplicated record, the last copy's proof
        last = {leaf_hash(r): i for i, r in enumerate(records)}
        assert got["proofsByValue"] == [proofs[last[leaf_hash(r)]] for r in records]
        assert got["dump"] == dump_standard(tree, records)
        assert json.dumps(got["dump"]) == json.dumps(dump_standard(tree, records))
        assert got["render"] == tree.render()
        for oz_multi, wanted in zip(got["multiproofs"], [indices, []], strict=True):
            ours = tree.multiproof(wanted)
            assert oz_multi["proof"] == hexes(ours.proof)
            assert oz_multi["proofFlags"] == ours.proof_flags
            assert oz_multi["leaves"] == [leaf_values_to_json(records[i]) for i in ours.indices]
    for records, got in zip(batches[:: len(batches) // 4], responses[len(batches) :], strict=True):
        tree = MerkleTree.build(leaf_hashes(records), sort_leaves=False)
        assert got["tree"] == hexes(tree.nodes)
        assert got["proofs"] == [hexes(p) for p in tree.all_proofs()]
        assert got["dump"] == dump_standard(tree, records)


def test_openzeppelin_verifies_our_exported_tree_and_proofs(oz: Any) -> None:
    rng = random.Random(99)
    records = _records(rng, 300)
    tree = MerkleTree.build(leaf_hashes(records))
    proofs = tree.all_proofs()
    dump = json.loads(json.dumps(dump_standard(tree, records)))  # as exported: plain JSON
    genuine = [
        {"value": leaf_values_to_json(r), "proof": hexes(p)} for r, p in zip(records, proofs, strict=True)
    ]
    tampered = []
    for i in rng.sample(range(300), 20):
        field = rng.randrange(len(LEAF_TYPES))
        value = list(records[i])
        value[field] = flip(value[field], 0) if isinstance(value[field], bytes) else value[field] ^ 1
        tampered.append({"value": leaf_values_to_json(value), "proof": hexes(proofs[i])})
        bad_proof = list(proofs[i])
        k = rng.randrange(len(bad_proof))
        bad_proof[k] = flip(bad_proof[k], rng.randrange(32), rng.randrange(1, 256))
        tampered.append({"value": leaf_values_to_json(records[i]), "proof": hexes(bad_proof)})
        tampered.append({"value": leaf_values_to_json(records[i]), "proof": hexes(proofs[(i + 1) % 300])})
    mp = tree.multiproof([5, 17, 200, 299])
    multi = {
        "leaves": [leaf_values_to_json(records[i]) for i in mp.indices],
        "proof": hexes(mp.proof),
        "proofFlags": mp.proof_flags,
    }
    bad_multi = {**multi, "proof": [hexes([flip(mp.proof[0], 3)])[0], *multi["proof"][1:]]}
    broken_dump = copy.deepcopy(dump)
    broken_dump["tree"][7] = "0x" + "11" * 32
    wrong_value_dump = copy.deepcopy(dump)
    wrong_value_dump["values"][0]["value"][7] = str(int(wrong_value_dump["values"][0]["value"][7]) + 1)

    good, broken, wrong_value = oz(
        [
            {
                "op": "verify",
                "dump": dump,
                "root": h(tree.root),
                "checks": genuine + tampered,
                "multiproofs": [multi, bad_multi],
            },
            {"op": "verify", "dump": broken_dump, "root": h(tree.root)},
            {"op": "verify", "dump": wrong_value_dump, "root": h(tree.root)},
        ]
    )
    assert "error" not in good, good
    assert good["root"] == h(tree.root)
    assert good["checks"][: len(genuine)] == [{"loaded": True, "static": True}] * len(genuine)
    assert good["checks"][len(genuine) :] == [{"loaded": False, "static": False}] * len(tampered)
    assert good["multiproofs"] == [{"loaded": True, "static": True}, {"loaded": False, "static": False}]
    # OZ's load validates the dump as ours does
    assert "Merkle tree is invalid" in broken["error"]
    assert "Merkle tree does not contain the expected value" in wrong_value["error"]
    for bad in (broken_dump, wrong_value_dump):
        with pytest.raises(ValueError):
            load_standard(bad)


def test_vectors_are_current(oz: Any) -> None:
    """vectors.json is what make_vectors.mjs's cases give with the installed @openzeppelin/merkle-tree."""
    version = json.loads(OZ_PACKAGE.read_text())["version"]
    assert VECTOR_DATA["generator"].endswith(f"@openzeppelin/merkle-tree {version} StandardMerkleTree")
    requests = [
        {"op": "build", "types": list(LEAF_TYPES), "values": case["values"], "sortLeaves": case["sortLeaves"],
         "multiproofs": [mp["indices"] for mp in case["multiproofs"]]}
        for case in VECTOR_DATA["cases"].values()
    ]  # fmt: skip
    for case, got in zip(VECTOR_DATA["cases"].values(), oz(requests), strict=True):
        assert got["root"] == case["root"] and got["dump"] == case["dump"] and got["proofs"] == case["proofs"]
        assert got["leafHashes"] == case["leafHashes"] and got["render"] == case["render"]
        assert [{k: v for k, v in mp.items() if k != "indices"} for mp in case["multiproofs"]] == got[
            "multiproofs"
        ]
