"""IPFS: local CID computation (:mod:`.cid`), the node client (:mod:`.client`), a dev node (:mod:`.node`).

Every CID this package returns is CIDv1, base32, lower case, for content added with raw leaves,
sha2-256 and the 262144-byte chunker, so a CID computed locally and one returned by the node compare
equal as strings.
"""

from edgeledger.ipfs.cid import (
    CidBuilder,
    InvalidCidError,
    canonical_json_bytes,
    cid_multihash_digest,
    cid_of_bytes,
    cid_of_file,
    cid_of_json,
    cid_of_stream,
    is_valid_cid,
    normalize_cid,
)
from edgeledger.ipfs.client import IpfsClient, IpfsError
from edgeledger.ipfs.node import LocalIpfsNode

__all__ = [
    "CidBuilder",
    "InvalidCidError",
    "IpfsClient",
    "IpfsError",
    "LocalIpfsNode",
    "canonical_json_bytes",
    "cid_multihash_digest",
    "cid_of_bytes",
    "cid_of_file",
    "cid_of_json",
    "cid_of_stream",
    "is_valid_cid",
    "normalize_cid",
]
