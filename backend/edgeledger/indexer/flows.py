"""Indexing steps, reorg rollback, follow and rebuild (docs/indexer.md).

One step, in one database transaction (so a crash leaves the cursor and the events consistent):

1. Reorg check: the chain's hash of the cursor block must equal the stored one. If not, walk back over
   the stored block hashes (every block holding an indexed event, and every former cursor position) to
   the newest block the chain still has: the common ancestor. Events above it are deleted, the cursor
   moves back to it and the projections are rebuilt from the remaining events.
2. Otherwise read the logs of the next range (at most INDEXER_LOG_CHUNK blocks, up to the head minus
   INDEXER_CONFIRMATIONS), decode them, store them with the hashes of their blocks and of the range's last
   block, apply them to the projections and move the cursor. A log whose block hash differs from the one
   the chain reports for that block (a reorg while reading) aborts the step; the next one starts over.

Asset metadata (the title) is read from IPFS best effort, capped at INDEXER_METADATA_MAX_BYTES and
INDEXER_METADATA_TIMEOUT_SECONDS: a document too large, too slow, not JSON, or an IPFS node that is down
is recorded on the asset with its reason (``metadata_state``, ``metadata_error``) and the step goes on, so
no asset can hold the cursor back, exhaust the worker's memory or make the task retry forever. Reads that
timed out or found IPFS down are tried again after a catch-up, each at most INDEXER_METADATA_ATTEMPTS
times in all, in their own small commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.config import Settings
from edgeledger.db import exclusive_work
from edgeledger.indexer import service
from edgeledger.indexer.models import ChainEventRow, IndexedBlock, IndexerCursor, IndexerStatus
from edgeledger.ipfs import IpfsClient

log = logging.getLogger(__name__)

NAME = "main"
ZERO32 = "0x" + "00" * 32


@dataclass
class StepReport:
    from_block: int = 0
    to_block: int = 0
    events: int = 0
    reorg_depth: int = 0
    head: int = 0
    target: int = 0
    busy: bool = False

    @property
    def caught_up(self) -> bool:
        return not self.busy and self.reorg_depth == 0 and self.to_block >= self.target


@dataclass
class Indexer:
    """One indexer over one chain client; ``title_of`` reads asset titles (IPFS)."""

    session: Session
    chain: ChainClient
    settings: Settings
    title_of: service.TitleOf
    decoder: service.EventDecoder = field(init=False)

    def __post_init__(self) -> None:
        self.decoder = service.EventDecoder(self.chain)

    # --- chain reads ---------------------------------------------------------------------------

    def _hash_of(self, number: int) -> str | None:
        if number < 0:
            return ZERO32
        with self.chain.rpc("eth_getBlockByNumber"):
            try:
                block = self.chain.w3.eth.get_block(number)
            except Exception as exc:  # web3 raises BlockNotFound past the head
                if type(exc).__name__ == "BlockNotFound":
                    return None
                raise
        return "0x" + bytes(block["hash"]).hex()

    def start_block(self) -> int:
        deployment = self.chain.deployment
        return min(deployment.contracts[name].block for name in service.CONTRACTS)

    # --- cursor ----------------------------------------------------------------------------------

    def cursor(self) -> IndexerCursor:
        cursor = self.session.get(IndexerCursor, NAME)
        if cursor is None:
            first = self.start_block() - 1
            cursor = IndexerCursor(name=NAME, block_number=first, block_hash=self._hash_of(first) or ZERO32)
            cursor.reorgs, cursor.last_reorg_depth = 0, 0
            self.session.add(cursor)
            self.session.flush()
        return cursor

    # --- one step --------------------------------------------------------------------------------

    def step(self) -> StepReport:
        with self.chain.rpc("eth_blockNumber"):
            head = self.chain.w3.eth.block_number
        target = head - self.settings.indexer_confirmations
        cursor = self.cursor()
        report = StepReport(
            from_block=cursor.block_number, to_block=cursor.block_number, head=head, target=target
        )
        if self._hash_of(cursor.block_number) != cursor.block_hash:
            report.reorg_depth = self._roll_back(cursor)
            report.to_block = cursor.block_number
            self.session.commit()
            return report
        if cursor.block_number >= target:
            self.session.commit()
            return report
        first = cursor.block_number + 1
        last = min(target, cursor.block_number + self.settings.indexer_log_chunk)
        events = self._read(first, last)
        if events is None:
            self.session.rollback()
            return report  # the chain moved under us; the next step re-checks
        last_hash = self._hash_of(last)
        if last_hash is None:
            self.session.rollback()
            return report
        self.session.add_all(e.row() for e in events)
        blocks = {e.block_number: e.block_hash for e in events} | {last: last_hash}
        for number, block_hash in blocks.items():
            self.session.merge(IndexedBlock(number=number, hash=block_hash))
        service.apply_events(self.session, events, self.title_of)
        cursor.block_number, cursor.block_hash = last, last_hash
        self.session.commit()
        report.to_block, report.events = last, len(events)
        return report

    def _read(self, first: int, last: int) -> list[service.DecodedEvent] | None:
        query = {"address": self.decoder.checksummed_addresses, "fromBlock": first, "toBlock": last}
        # One query while INDEXER_LOG_CHUNK <= ETH_LOGS_MAX_BLOCKS; smaller pieces when the provider
        # refuses the range (ChainClient.get_logs). The block hashes below still catch a reorg between them.
        entries = self.chain.get_logs(query)
        events = [e for e in (self.decoder.decode(entry) for entry in entries) if e is not None]
        events.sort(key=lambda e: (e.block_number, e.log_index))
        for number in sorted({e.block_number for e in events}):
            stated = {e.block_hash for e in events if e.block_number == number}
            if stated != {self._hash_of(number)}:
                log.info("block %d changed while reading its logs; retrying", number)
                return None
        return events

    def _roll_back(self, cursor: IndexerCursor) -> int:
        """Moves the cursor back to the common ancestor, deletes what came after, re-projects."""
        stored = list(
            self.session.scalars(
                select(IndexedBlock)
                .where(IndexedBlock.number <= cursor.block_number)
                .order_by(IndexedBlock.number.desc())
            )
        )
        ancestor_number, ancestor_hash = self.start_block() - 1, None
        for block in stored:
            if self._hash_of(block.number) == block.hash:
                ancestor_number, ancestor_hash = block.number, block.hash
                break
        if ancestor_hash is None:
            ancestor_hash = self._hash_of(ancestor_number) or ZERO32
        depth = cursor.block_number - ancestor_number
        self.session.execute(delete(ChainEventRow).where(ChainEventRow.block_number > ancestor_number))
        self.session.execute(delete(IndexedBlock).where(IndexedBlock.number > ancestor_number))
        cursor.block_number, cursor.block_hash = ancestor_number, ancestor_hash
        cursor.reorgs += 1
        cursor.last_reorg_depth = depth
        service.reproject(self.session, self.title_of)
        log.warning("reorg: rolled back %d blocks to %d (%s)", depth, ancestor_number, ancestor_hash)
        return depth

    # --- loops -----------------------------------------------------------------------------------

    def catch_up(
        self, progress: Callable[[StepReport], None] | None = None, max_steps: int = 1_000_000
    ) -> StepReport:
        """Steps until the cursor reaches the head minus the confirmations (reorgs included)."""
        report = StepReport()
        for _ in range(max_steps):
            report = self.step()
            if progress is not None:
                progress(report)
            if report.caught_up:
                break
        if not report.busy and report.reorg_depth == 0:
            self.retry_metadata()
        return report

    def retry_metadata(self) -> int:
        """One bounded pass over the assets whose metadata read timed out or found IPFS down (at most
        INDEXER_METADATA_ATTEMPTS reads per asset, 10 assets per pass), committed on its own: the cursor
        never waits for it."""
        tried = service.retry_metadata(self.session, self.title_of, self.settings.indexer_metadata_attempts)
        self.session.commit()
        return tried


def make_indexer(
    session: Session, chain: ChainClient, settings: Settings, ipfs: IpfsClient | None
) -> Indexer:
    reader = service.ipfs_title_reader(
        ipfs, settings.indexer_metadata_max_bytes, settings.indexer_metadata_timeout_seconds
    )
    return Indexer(session, chain, settings, reader)


def run_once(session: Session, chain: ChainClient, settings: Settings, ipfs: IpfsClient | None) -> StepReport:
    """Catch up once under the indexer's work lock (one indexer at a time across workers)."""
    lock_dir = Path(settings.data_dir) / "locks"
    with exclusive_work(session, lock_dir, "indexer", 0) as mine:
        if not mine:
            return StepReport(busy=True)
        return make_indexer(session, chain, settings, ipfs).catch_up()


def rebuild(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    ipfs: IpfsClient | None,
    progress: Callable[[StepReport], None] | None = None,
) -> StepReport:
    """Forgets everything the indexer holds and indexes again from the deployment block, using only the
    chain (events) and IPFS (asset metadata)."""
    for table in (*service.PROJECTIONS, ChainEventRow, IndexedBlock, IndexerCursor):
        session.execute(delete(table))
    session.commit()
    return make_indexer(session, chain, settings, ipfs).catch_up(progress)


def status(session: Session, chain: ChainClient, settings: Settings) -> IndexerStatus:
    cursor = session.get(IndexerCursor, NAME)
    try:
        head: int | None = chain.block_number()
    except ChainError:
        head = None
    return IndexerStatus(
        cursor_block=cursor.block_number if cursor else None,
        cursor_hash=cursor.block_hash if cursor else None,
        head=head,
        lag_blocks=(head - cursor.block_number) if cursor and head is not None else None,
        confirmations=settings.indexer_confirmations,
        events=session.scalar(select(func.count(ChainEventRow.id))) or 0,
        reorgs=cursor.reorgs if cursor else 0,
        last_reorg_depth=cursor.last_reorg_depth if cursor else 0,
    )


__all__ = ["Indexer", "StepReport", "make_indexer", "rebuild", "run_once", "status"]
