"""Which registered asset a delivered request is for (docs/ingestion.md, "Asset resolution"): the
CID-shaped pieces of its host and path, looked up once per distinct CID among the assets registered here
or indexed from the chain. Used by ingestion (:mod:`ingest`) for every record; its caches are per run
and bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.assets.models import Asset
from edgeledger.indexer.models import IndexedAsset
from edgeledger.ipfs.cid import InvalidCidError, normalize_cid

__all__ = ["CACHE_LIMIT", "AssetResolver", "asset_candidates"]

#: Entries of each per-run cache before it is cleared (ingestion's own caches use the same bound).
CACHE_LIMIT = 100_000

# Cheap shape filters before the real CID parser: CIDv1 base32 ("b" + lower-case base32, the form assets
# are stored in), CIDv1 base58btc ("z..."), CIDv0 ("Qm" + 44 base58 characters).
_CID_SHAPE = re.compile(
    r"b[a-z2-7]{50,120}|B[A-Z2-7]{50,120}|z[1-9A-HJ-NP-Za-km-z]{40,100}|Qm[1-9A-HJ-NP-Za-km-z]{44}"
)


def asset_candidates(host: str, uri: str) -> Iterator[str]:
    """CID-shaped pieces of a request, in the order they are tried against registered assets.

    1. the first label of a subdomain-gateway host (``<cid>.ipfs.<gateway>``);
    2. every path segment, left to right, with anything from its first ``.`` cut off (an extension):
       ``/ipfs/<cid>/video.mp4``, ``/<cid>``, ``/assets/<cid>.mp4``, ``/v/<cid>/seg-0001.ts`` ...
    """
    label, _, rest = host.partition(".")
    if rest.startswith("ipfs.") and _CID_SHAPE.fullmatch(label):
        yield label
    for segment in uri.split("/"):
        stem = segment.partition(".")[0]
        if len(stem) >= 41 and _CID_SHAPE.fullmatch(stem):
            yield stem


class AssetResolver:
    """Request -> registered asset id (0 when none), cached per run: one query per distinct CID.

    URIs are mostly distinct (segments, byte ranges), their directories are not: the directory part of
    the path is cached, the last segment is checked on its own (one length test when it is short).
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._by_cid: dict[str, int] = {}
        self._by_directory: dict[str, int] = {}

    def __call__(self, host: str, uri: str) -> int:
        if ".ipfs." in host:
            for candidate in asset_candidates(host, ""):
                found = self._asset_of(candidate)
                if found:
                    return found
        directory, _, last = uri.rpartition("/")
        found = self._by_directory.get(directory)
        if found is None:
            found = 0
            for candidate in asset_candidates("", directory):
                found = self._asset_of(candidate)
                if found:
                    break
            if len(self._by_directory) >= CACHE_LIMIT:
                self._by_directory.clear()
            self._by_directory[directory] = found
        if found or len(last) < 41:
            return found
        stem = last.partition(".")[0]
        return self._asset_of(stem) if _CID_SHAPE.fullmatch(stem) else 0

    def _asset_of(self, candidate: str) -> int:
        asset_id = self._by_cid.get(candidate)
        if asset_id is None:
            try:
                cid = normalize_cid(candidate.lower() if candidate[0] == "B" else candidate, allow_v0=True)
            except InvalidCidError:
                cid = None
            asset_id = 0
            if cid is not None:
                asset_id = (
                    self._session.scalar(select(func.min(Asset.id)).where(Asset.content_cid == cid)) or 0
                )
                if not asset_id:  # registered on chain directly: the chain indexer's projection knows it
                    indexed = self._session.scalars(
                        select(IndexedAsset.asset_id).where(IndexedAsset.content_cid.in_({cid, candidate}))
                    )
                    asset_id = min((int(a) for a in indexed), default=0)
            if len(self._by_cid) >= CACHE_LIMIT:
                self._by_cid.clear()
            self._by_cid[candidate] = asset_id
        return asset_id
