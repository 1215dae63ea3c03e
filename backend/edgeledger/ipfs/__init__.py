"""IPFS: local CID computation (:mod:`.cid`), the node client (:mod:`.client`), a dev node (:mod:`.node`).

Every CID this package returns is CIDv1, base32, lower case, for content added with raw leaves,
sha2-256 and the chunker and links per node of one import profile (``PROFILES``: ``legacy-cidv1``, the
default, and IPIP-499's ``unixfs-v1-2025``), so a CID computed locally and one returned by the node for
the same profile compare equal as strings.
"""

from edgeledger.ipfs.cid import (
    DEFAULT_PROFILE,
    PROFILES,
    CidBuilder,
    ImportProfile,
    InvalidCidError,
    canonical_json_bytes,
    cid_multihash_digest,
    cid_of_bytes,
    cid_of_file,
    cid_of_json,
    cid_of_stream,
    import_profile,
    is_valid_cid,
    normalize_cid,
)
from edgeledger.ipfs.client import IpfsClient, IpfsError
from edgeledger.ipfs.node import LocalIpfsNode

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "CidBuilder",
    "ImportProfile",
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
    "import_profile",
    "is_valid_cid",
    "normalize_cid",
]
