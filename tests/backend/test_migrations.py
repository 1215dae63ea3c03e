"""Data migrations on real databases (SQLite and PostgreSQL): what a deployment's existing rows become.

0008 (receipts per country): receipts stored per (batch, asset, merchant, region) are recomputed per
country from the batch's records, excluded records counted apart; the downgrade restores the old grain.
0010 (import profile per asset): existing assets become ``legacy-cidv1``, the only layout before it.
0012 (scopes fail closed, metadata states): no auditor is granted anything; untitled indexed assets are
marked for a new metadata read.
0013 (declared log formats): existing sources declare nothing (detected per file as before).
0014 (queued ingestion, shared batch trees): existing ingests count as read whole, with no claim.
0015 (import profile of indexed assets): assets projected before it become ``legacy-cidv1``.
0016 (catalogue journal): existing registrations are registrations of their own, and the open ones stay
unique per content hash through the upgrade and the downgrade.
0017 (converted bills): cases before it record no conversion.
0018 (one merchant per escrow address): shared addresses stop the upgrade until moved; then unique.
0019 (token amounts past 64 bits): exact and ordered as numbers; back only while every amount fits.
0020 (an anchor's nonce): anchors before it name no nonce; back keeps every batch.
0021 (a registration's and a catalogue's nonce): likewise.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgeledger.assets.models import Registration
from edgeledger.auth.models import Role, User
from edgeledger.config import PROJECT_ROOT
from edgeledger.db import make_engine, migrate
from edgeledger.deliveries.models import (
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    IngestFile,
    IngestState,
    SourceKind,
    SourceStatus,
)
from edgeledger.ledger.ids import batch_id_for, merchant_id_for, source_id_for
from edgeledger.settlement.models import Settlement, SettlementPayout

pytestmark = pytest.mark.integration

INT64_MAX_VALUE = 2**63 - 1

DAY = 1_764_547_200
HOST = "shop.example"


def _world(url: str, name: str = "cf-migrate") -> int:
    """A source with one anchored batch: 3 records from DE (one excluded by a fraud flag), 2 from FR, all
    for asset 7; and the receipt the previous release stored for it. Returns the batch's key."""
    engine = make_engine(url)
    with Session(engine) as session:
        # A core INSERT naming only the columns of that release (the model has columns added later).
        source_pk = session.execute(
            insert(DeliverySource).values(
                source_id=source_id_for(name),
                name=name,
                kind=SourceKind.cdn_provider,
                provider="cloudfront",
                operator="0x" + "11" * 20,
                signer="0x" + "22" * 20,
                regions_bitmap="0x1",
                jurisdiction="US",
                node_ips_json="[]",
                status=SourceStatus.active,
            )
        ).inserted_primary_key[0]
        # A core INSERT naming only the columns of that release (the model has columns added later).
        batch_pk = session.execute(
            insert(DeliveryBatch).values(
                batch_id=batch_id_for(source_id_for(name), DAY, DAY + 86400, BatchKind.regular, 0),
                source_pk=source_pk,
                period_start=DAY,
                period_end=DAY + 86400,
                kind=BatchKind.regular,
                correction_seq=0,
                state=BatchState.final,
            )
        ).inserted_primary_key[0]
        # Core insert of the columns the old revision has (the model has gained queued-ingestion columns)
        ingest_pk = session.execute(
            insert(IngestFile).values(
                source_pk=source_pk, name="x.log", state=IngestState.done, pseudonym_key_id="k"
            )
        ).inserted_primary_key[0]
        for n, (country, nbytes, excluded) in enumerate(
            [
                ("DE", 100, False),
                ("DE", 200, False),
                ("DE", 400, True),
                ("FR", 1000, False),
                ("FR", 3000, False),
            ]
        ):
            session.add(
                DeliveryRecordRow(
                    source_pk=source_pk,
                    batch_pk=batch_pk,
                    ingest_file_pk=ingest_pk,
                    line_number=n + 1,
                    request_id=f"req-{n}",
                    timestamp_ms=DAY * 1000 + n,
                    edge_location="FRA56-P1",
                    country=country,
                    region="EU",
                    host=HOST,
                    uri="/ipfs/x",
                    asset_id=7,
                    merchant_id=merchant_id_for(HOST),
                    bytes_delivered=nbytes,
                    status=200,
                    cache_result=1,
                    pseudonym_key_id="k",
                    client_pseudonym=secrets.token_bytes(32),
                    salt=secrets.token_bytes(32),
                    client_commitment=secrets.token_bytes(32),
                    leaf=secrets.token_bytes(32),
                    excluded=excluded,
                )
            )
        session.commit()
    with engine.begin() as conn:  # the previous release's receipt: no country column yet
        conn.execute(
            text(
                "INSERT INTO delivery_receipts (batch_pk, period_start, period_end, asset_id, merchant_id, "
                "host, region, requests, bytes_delivered, excluded_requests, excluded_bytes, computed_at) "
                "VALUES (:b, :s, :e, 7, :m, :h, 'EU', 4, 4300, 1, 400, CURRENT_TIMESTAMP)"
            ),
            {"b": batch_pk, "s": DAY, "e": DAY + 86400, "m": "0x" + merchant_id_for(HOST).hex(), "h": HOST},
        )
    engine.dispose()
    return batch_pk


_OLD_RECEIPTS = text(
    "SELECT asset_id, region, requests, bytes_delivered, excluded_requests, excluded_bytes "
    "FROM delivery_receipts ORDER BY 1, 2"
)
_NEW_RECEIPTS = text(
    "SELECT asset_id, region, country, requests, bytes_delivered, excluded_requests, excluded_bytes "
    "FROM delivery_receipts ORDER BY 1, 2, 3"
)


def _receipts(url: str, *, country: bool) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(_NEW_RECEIPTS if country else _OLD_RECEIPTS).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_0008_recomputes_receipts_per_country_and_back(database_url: str) -> None:
    migrate(database_url, "0007")
    _world(database_url)
    assert _receipts(database_url, country=False) == [(7, "EU", 4, 4300, 1, 400)]

    migrate(database_url, "0008")
    assert _receipts(database_url, country=True) == [
        (7, "EU", "DE", 2, 300, 1, 400),
        (7, "EU", "FR", 2, 4000, 0, 0),
    ]

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0007")
    assert _receipts(database_url, country=False) == [(7, "EU", 4, 4300, 1, 400)]


def test_0009_adds_terms_block_and_abandoned_batches_and_back(database_url: str) -> None:
    migrate(database_url, "0008")
    batch_pk = _world(database_url, "cf-migrate-0009")
    engine = make_engine(database_url)
    with Session(engine) as session:
        merchant = User(role=Role.merchant, name="Shop", address="0x" + "33" * 20)
        session.add(merchant)
        session.flush()
        session.execute(
            text("INSERT INTO merchant_hosts (host, merchant_user_id, created_at) VALUES (:h, :m, :t)"),
            {"h": HOST, "m": merchant.id, "t": datetime.now(UTC)},
        )
        session.commit()
        merchant_pk = merchant.id
    migrate(database_url, "0009")
    with engine.begin() as conn:
        # The sources that already billed the merchant's hosts keep billing it: no bill changes by itself.
        authorised = conn.execute(
            text("SELECT merchant_user_id, source_pk, authorised_by FROM merchant_sources")
        )
        source_pk = conn.execute(
            text("SELECT source_pk FROM delivery_batches WHERE id = :b"), {"b": batch_pk}
        )
        assert (merchant_pk, source_pk.scalar_one(), "migration:0009") in set(authorised)
        conn.execute(
            text(
                "UPDATE delivery_batches SET state = 'abandoned', abandoned_by = 'user:1:admin', "
                "abandon_reason = 'node lost its key' WHERE id = :b"
            ),
            {"b": batch_pk},
        )
        assert conn.execute(text("SELECT terms_block, unbillable_json FROM settlements")).all() == []
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0008")
    with engine.connect() as conn:
        state = text("SELECT state FROM delivery_batches WHERE id = :b")
        assert conn.execute(state, {"b": batch_pk}).scalar_one() == "closed"
    engine.dispose()


def test_0012_grants_no_scope_and_marks_untitled_assets_for_a_new_read_and_back(database_url: str) -> None:
    migrate(database_url, "0009")
    engine = make_engine(database_url)
    asset = (
        "INSERT INTO indexed_assets (asset_id, content_hash, creator, owner, parent_id, aigc, content_cid, "
        "metadata_cid, title, status, royalty_bps, split_json, registered_block, registered_tx) VALUES "
        "(:id, :h, :a, :a, '0', false, 'bafy-content', :m, :t, 'active', 0, '[]', 1, :h)"
    )
    with engine.begin() as conn:
        for asset_id, title in (("1", "Sneaker"), ("2", None)):
            params = {"id": asset_id, "h": "0x" + "00" * 32, "a": "0x" + "11" * 20, "m": f"bafy-{asset_id}"}
            conn.execute(text(asset), {**params, "t": title})
        conn.execute(
            text(
                "INSERT INTO auth_users (address, name, role, created_at) VALUES (NULL, 'a', 'auditor', :t)"
            ),
            {"t": datetime.now(UTC)},
        )
    migrate(database_url, "0012")
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "SELECT asset_id, metadata_state, metadata_attempts, metadata_error "
                "FROM indexed_assets ORDER BY 1"
            )
        ).all()
        assert [tuple(r)[:3] for r in rows] == [("1", "ok", 1), ("2", "unavailable", 0)]
        assert rows[0][3] is None and "before metadata reads were recorded" in rows[1][3]
        # No auditor becomes global by the upgrade: scopes are granted, never implied.
        assert conn.execute(text("SELECT count(*) FROM auth_auditor_scopes")).scalar_one() == 0
        auditor = conn.execute(text("SELECT id FROM auth_users WHERE role = 'auditor'")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO auth_auditor_scopes (user_id, kind, ref, created_at, granted_by) "
                "VALUES (:u, 'global', '*', :t, NULL)"
            ),
            {"u": auditor, "t": datetime.now(UTC)},
        )
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0009")
    with engine.connect() as conn:
        # Before 0012 an auditor without entries was global: the explicit grant is no longer needed.
        assert conn.execute(text("SELECT count(*) FROM auth_auditor_scopes")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM indexed_assets")).scalar_one() == 2
    engine.dispose()


def test_0010_records_the_legacy_import_profile_of_existing_assets_and_back(database_url: str) -> None:
    """Every asset registered before import profiles existed was added as legacy-cidv1."""
    migrate(database_url, "0009")
    engine = make_engine(database_url)
    legacy_row = text(
        "INSERT INTO assets (id, content_hash, content_cid, metadata_cid, creator, owner, aigc, title, "
        "description, media_type, size_bytes, filename, territories_bitmap, valid_from, valid_until, "
        "royalty_bps, terms_cid, status, chain_id, contract_address, tx_hash, block_number, log_index, "
        "registered_at, created_at) VALUES (9010, :h, 'bafkcid', 'bafkmeta', :a, :a, false, 't', '', "
        "'image/png', 1, 'f.png', '0x1', 0, 0, 0, '', 'active', 31337, :a, :tx, 1, 0, :t, :t)"
    )
    with engine.begin() as conn:
        conn.execute(
            legacy_row,
            {"h": "0x" + "ab" * 32, "a": "0x" + "44" * 20, "tx": "0x" + "cd" * 32, "t": datetime.now(UTC)},
        )
    migrate(database_url, "0010")
    with engine.connect() as conn:
        profile = conn.execute(text("SELECT import_profile FROM assets WHERE id = 9010")).scalar_one()
        assert profile == "legacy-cidv1"
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0009")
    with engine.connect() as conn:
        assert "import_profile" not in {c["name"] for c in inspect(conn).get_columns("assets")}
        assert conn.execute(text("SELECT content_cid FROM assets WHERE id = 9010")).scalar_one() == "bafkcid"
    engine.dispose()


def test_0013_sources_declare_nothing_until_they_do_and_back(database_url: str) -> None:
    """Existing sources are detected per file as before: the new declaration columns start NULL."""
    migrate(database_url, "0012")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO delivery_sources (source_id, name, kind, provider, operator, signer, "
                "regions_bitmap, jurisdiction, node_ips_json, status, created_at, updated_at) VALUES "
                "(:sid, 'edge-0013', 'edge_node', 'edgeledger', :a, :a, '0x1', 'DE', '[]', 'active', :t, :t)"
            ),
            {"sid": source_id_for("edge-0013"), "a": "0x" + "44" * 20, "t": datetime.now(UTC)},
        )
    migrate(database_url, "0013")
    declared = text(
        "SELECT log_format, site_host, site_edge_location, log_fields_json FROM delivery_sources "
        "WHERE name = 'edge-0013'"
    )
    with engine.begin() as conn:
        assert tuple(conn.execute(declared).one()) == (None, None, None, None)
        conn.execute(
            text(
                "UPDATE delivery_sources SET log_format = 'nginx_combined', site_host = 'media.example.com', "
                "site_edge_location = 'FRA1' WHERE name = 'edge-0013'"
            )
        )
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0012")
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("delivery_sources")}
        assert not columns & {"log_format", "site_host", "site_edge_location", "log_fields_json"}
        name = text("SELECT name FROM delivery_sources WHERE name = 'edge-0013'")
        assert conn.execute(name).scalar_one() == "edge-0013"


def test_0014_marks_existing_ingests_as_read_whole_and_back(database_url: str) -> None:
    """Ingests before queued ingestion ran inline: all their bytes read, no claim, no attempt counted."""
    migrate(database_url, "0013")
    engine = make_engine(database_url)
    with Session(engine) as session:
        source_pk = session.execute(
            text(
                "INSERT INTO delivery_sources (source_id, name, kind, provider, operator, signer, "
                "regions_bitmap, jurisdiction, node_ips_json, status, created_at, updated_at) VALUES "
                "(:sid, 'cf-0014', 'cdn_provider', 'cloudfront', :a, :a, '0x1', 'US', '[]', 'active', "
                ":t, :t) RETURNING id"
            ),
            {"sid": source_id_for("cf-0014"), "a": "0x" + "11" * 20, "t": datetime.now(UTC)},
        ).scalar_one()
        session.execute(
            text(
                "INSERT INTO ingest_files (source_pk, name, size_bytes, state, pseudonym_key_id, lines, "
                "records_new, duplicates, duplicates_in_file, late_records, quarantined, skipped, "
                "created_at) "
                "VALUES (:s, 'x-0014.log', 123, 'done', 'k', 0, 0, 0, 0, 0, 0, 0, :t)"
            ),
            {"s": source_pk, "t": datetime.now(UTC)},
        )
        session.commit()
    migrate(database_url, "0014")
    with engine.connect() as conn:
        columns = (
            "SELECT bytes_read, attempts, claim, heartbeat_at FROM ingest_files WHERE name = 'x-0014.log'"
        )
        row = conn.execute(text(columns)).one()
        assert tuple(row) == (123, 0, None, None)
        assert conn.execute(text("SELECT count(*) FROM ingest_blob_chunks")).scalar_one() == 0
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0013")
    engine.dispose()
    engine = make_engine(database_url)
    schema = inspect(engine)
    assert "bytes_read" not in {c["name"] for c in schema.get_columns("ingest_files")}
    assert not {"ingest_blob_chunks", "batch_tree_pieces"} & set(schema.get_table_names())
    engine.dispose()


def test_0015_indexed_assets_before_it_were_legacy_cidv1_and_back(database_url: str) -> None:
    """Assets the indexer projected from a registry without profiles were all cut as legacy-cidv1."""
    migrate(database_url, "0014")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO indexed_assets (asset_id, content_hash, creator, owner, parent_id, aigc, "
                "content_cid, metadata_cid, title, status, royalty_bps, split_json, registered_block, "
                "registered_tx) VALUES ('15', :h, :a, :a, '0', false, 'bafy-content', 'bafy-meta', 't', "
                "'active', 0, '[]', 1, :h)"
            ),
            {"h": "0x" + "15" * 32, "a": "0x" + "11" * 20},
        )
    migrate(database_url, "0015")
    with engine.connect() as conn:
        profile = "SELECT import_profile FROM indexed_assets WHERE asset_id = '15'"
        assert conn.execute(text(profile)).scalar_one() == "legacy-cidv1"
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0014")
    engine.dispose()
    engine = make_engine(database_url)
    schema = inspect(engine)
    assert "import_profile" not in {c["name"] for c in schema.get_columns("indexed_assets")}
    with engine.connect() as conn:
        content = "SELECT content_cid FROM indexed_assets WHERE asset_id = '15'"
        assert conn.execute(text(content)).scalar_one() == "bafy-content"
    engine.dispose()


def test_0016_registrations_before_it_are_their_own_and_stay_unique_while_open_and_back(
    database_url: str,
) -> None:
    """Registrations before catalogues belong to none; the partial unique index of open registrations
    survives both directions (SQLite's downgrade copies the table)."""
    migrate(database_url, "0015")
    engine = make_engine(database_url)
    insert_registration = text(
        "INSERT INTO asset_registrations (content_hash, content_cid, creator, mode, state, params_json, "
        "attempts, created_at, updated_at) VALUES (:h, 'bafy-content', :a, 'server', :s, '{}', 1, :t, :t)"
    )
    values = {"h": "0x" + "16" * 32, "a": "0x" + "11" * 20, "s": "awaiting_signature", "t": datetime.now(UTC)}
    with engine.begin() as conn:
        conn.execute(insert_registration, values)
    migrate(database_url, "0016")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT catalogue_id, position, state FROM asset_registrations")).one()
        assert tuple(row) == (None, None, "awaiting_signature")
        assert conn.execute(text("SELECT count(*) FROM asset_catalogues")).scalar_one() == 0
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert_registration, values)
    with engine.begin() as conn:  # a catalogue and an item of it, then back to 0015
        cat = conn.execute(
            text(
                "INSERT INTO asset_catalogues (creator, mode, state, item_count, params_json, attempts, "
                "created_at, updated_at) VALUES (:a, 'server', 'awaiting_signature', 1, '{}', 1, :t, :t) "
                "RETURNING id"
            ),
            values,
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO asset_registrations (content_hash, content_cid, creator, mode, state, "
                "params_json, attempts, created_at, updated_at, catalogue_id, position) VALUES "
                "(:h, 'bafy-item', :a, 'server', 'awaiting_signature', '{}', 1, :t, :t, :c, 0)"
            ),
            {**values, "h": "0x" + "17" * 32, "c": cat},
        )
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0015")
    engine.dispose()
    engine = make_engine(database_url)
    schema = inspect(engine)
    assert not {"catalogue_id", "position"} & {c["name"] for c in schema.get_columns("asset_registrations")}
    assert "asset_catalogues" not in schema.get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM asset_registrations")).scalar_one() == 2
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert_registration, values)
    engine.dispose()


def test_0017_cases_before_it_record_no_conversion_and_back(database_url: str) -> None:
    """Cases before a bill was converted keep NULL for the converted amount and the rate; both columns
    go again on the way down, the case with them."""
    migrate(database_url, "0016")
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        user = conn.execute(
            text(
                "INSERT INTO auth_users (address, name, role, created_at) VALUES (NULL, 'm', 'merchant', :t) "
                "RETURNING id"
            ),
            {"t": now},
        ).scalar_one()
        bill = conn.execute(
            text(
                "INSERT INTO settlement_billing_imports (merchant_user_id, period_start, period_end, "
                "filename, sha256, layout, rows, ignored, superseded, created_at) VALUES (:u, 0, 86400, "
                "'b.csv', :h, 'edgeledger', 1, 0, false, :t) RETURNING id"
            ),
            {"u": user, "h": "ab" * 32, "t": now},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO settlement_cases (merchant_user_id, period_start, import_pk, region, day, "
                "reasons, ours_bytes, theirs_bytes, ours_requests, theirs_requests, ours_amount, "
                "theirs_amount, currency, state, adjustment, created_at) VALUES (:u, 0, :b, 'EU', "
                "'1970-01-01', 'amount', 1, 1, 1, 1, 100, 120, 'USD', 'open', 0, :t)"
            ),
            {"u": user, "b": bill, "t": now},
        )
    migrate(database_url, "0017")
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT theirs_amount, theirs_amount_converted, fx_json FROM settlement_cases")
        )
        assert tuple(row.one()) == (120, None, None)
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0016")
    engine.dispose()
    engine = make_engine(database_url)
    columns = {c["name"] for c in inspect(engine).get_columns("settlement_cases")}
    assert not {"theirs_amount_converted", "fx_json"} & columns
    with engine.connect() as conn:
        assert conn.execute(text("SELECT theirs_amount FROM settlement_cases")).scalar_one() == 120
    engine.dispose()


def test_0018_refuses_shared_escrow_addresses_then_makes_them_unique_and_back(database_url: str) -> None:
    """Two accounts on one escrow address stop the upgrade, which names the address; once an admin has
    moved one, the upgrade adds the unique index (a second account on an address is refused) and the
    settlements' ``tx_sent_at``; the downgrade drops both."""
    migrate(database_url, "0017")
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    shared, own = "0x" + "ab" * 20, "0x" + "cd" * 20
    insert_account = text(
        "INSERT INTO settlement_accounts (merchant_user_id, address, token, token_symbol, token_decimals, "
        "tolerance_bps, require_billing, auto_settle, next_period_start, created_at, updated_at) VALUES "
        "(:u, :a, :a, 'tUSDC', 6, 100, false, true, 0, :t, :t)"
    )
    with engine.begin() as conn:
        users = [
            conn.execute(
                text(
                    "INSERT INTO auth_users (address, name, role, created_at) VALUES (NULL, :n, 'merchant', "
                    ":t) RETURNING id"
                ),
                {"n": name, "t": now},
            ).scalar_one()
            for name in ("shop-1", "shop-2", "shop-3")
        ]
        for user in users[:2]:
            conn.execute(insert_account, {"u": user, "a": shared, "t": now})
    with pytest.raises(RuntimeError, match=f"{shared} \\(2 accounts\\)"):
        migrate(database_url, "0018")
    schema = inspect(engine)
    assert "tx_sent_at" not in {c["name"] for c in schema.get_columns("settlements")}  # nothing half-done
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE settlement_accounts SET address = :a WHERE merchant_user_id = :u"),
            {
                "a": own,
                "u": users[1],
            },
        )
    migrate(database_url, "0018")
    engine.dispose()
    engine = make_engine(database_url)
    assert {"tx_nonce", "tx_sent_at"} <= {c["name"] for c in inspect(engine).get_columns("settlements")}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert_account, {"u": users[2], "a": shared, "t": now})
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0017")
    engine.dispose()
    engine = make_engine(database_url)
    assert not {"tx_nonce", "tx_sent_at"} & {c["name"] for c in inspect(engine).get_columns("settlements")}
    with engine.begin() as conn:
        conn.execute(insert_account, {"u": users[2], "a": shared, "t": now})  # no index any more
        conn.execute(text("DELETE FROM settlement_accounts"))
    engine.dispose()


def test_0019_widens_token_amounts_exactly_and_back_while_they_fit(database_url: str) -> None:
    """Existing totals and payouts keep their values; afterwards amounts past 2^63 - 1 are stored and
    read back to the unit, and ordered as numbers; the downgrade stops while one does not fit 64 bits,
    and converts back once none does."""
    migrate(database_url, "0018")
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        user = conn.execute(
            text(
                "INSERT INTO auth_users (address, name, role, created_at) VALUES (NULL, 'w', 'merchant', :t) "
                "RETURNING id"
            ),
            {"t": now},
        ).scalar_one()
        settlement = conn.execute(
            text(
                "INSERT INTO settlements (merchant_user_id, period_start, period_end, period_id, attempt, "
                "kind, sequence, held_total, state, merchant_address, token, total, payee_count, "
                "receipt_count, batch_ids_json, send_attempts, created_at, updated_at) VALUES (:u, 0, 86400, "
                "0, 1, 'period', 0, 7, 'computed', :a, :a, :total, 2, 0, '[]', 0, :t, :t) RETURNING id"
            ),
            {"u": user, "a": "0x" + "ab" * 20, "total": INT64_MAX_VALUE, "t": now},
        ).scalar_one()
        for payee, amount in (("0x" + "01" * 20, INT64_MAX_VALUE - 9), ("0x" + "02" * 20, 9)):
            conn.execute(
                text(
                    "INSERT INTO settlement_payouts (settlement_pk, payee, amount, leaf) "
                    "VALUES (:s, :p, :a, :l)"
                ),
                {"s": settlement, "p": payee, "a": amount, "l": "0x" + "00" * 32},
            )
        if engine.dialect.name == "sqlite":  # what an attempt that stopped half-way leaves behind
            conn.execute(text("ALTER TABLE settlement_payouts ADD COLUMN amount__retyped VARCHAR(78)"))
    migrate(database_url, "0019")
    engine.dispose()
    engine = make_engine(database_url)
    with Session(engine) as session:
        row = session.get(Settlement, settlement)
        assert row is not None and (row.total, row.held_total) == (INT64_MAX_VALUE, 7)
        row.total = 10**38 + 1  # beyond 64 bits, within the vault's 128
        session.add(
            SettlementPayout(settlement_pk=settlement, payee="0x" + "03" * 20, amount=10**30, leaf="0x")
        )
        session.commit()
    with Session(engine) as session:
        row = session.get(Settlement, settlement)
        assert row is not None and row.total == 10**38 + 1
        ordered = session.scalars(
            select(SettlementPayout.amount)
            .where(SettlementPayout.settlement_pk == settlement)
            .order_by(SettlementPayout.amount.desc())
        ).all()
        assert ordered == [10**30, INT64_MAX_VALUE - 9, 9]
        assert session.scalar(select(func.count()).where(SettlementPayout.amount > 10)) == 2
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    with pytest.raises(RuntimeError, match=r"settlements\.total hold amounts beyond 2\^63 - 1"):
        command.downgrade(config, "0018")
    with Session(engine) as session:
        row = session.get(Settlement, settlement)
        assert row is not None
        row.total = 11
        session.execute(delete(SettlementPayout).where(SettlementPayout.amount > INT64_MAX_VALUE))
        session.commit()
    command.downgrade(config, "0018")
    engine.dispose()
    engine = make_engine(database_url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT total, held_total FROM settlements")).one() == (11, 7)
        assert conn.execute(
            text("SELECT amount FROM settlement_payouts ORDER BY amount")
        ).scalars().all() == [
            9,
            INT64_MAX_VALUE - 9,
        ]
        conn.execute(text("DELETE FROM settlement_payouts"))
        conn.execute(text("DELETE FROM settlements"))
    engine.dispose()


def test_0020_anchors_before_it_record_no_nonce_and_back(database_url: str) -> None:
    """Batches anchored or in flight before it name no nonce nor send time (a stuck one is dated by the
    first run after the upgrade); the downgrade drops the columns and keeps every batch."""
    migrate(database_url, "0019")
    batch_pk = _world(database_url, "cf-migrate-0020")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE delivery_batches SET state = 'anchoring', tx_hash = :h WHERE id = :b"),
            {"h": "0x" + "ab" * 32, "b": batch_pk},
        )
    migrate(database_url, "0020")
    row = text("SELECT tx_hash, tx_nonce, tx_prev_hash, tx_sent_at FROM delivery_batches WHERE id = :b")
    with engine.begin() as conn:
        assert conn.execute(row, {"b": batch_pk}).one() == ("0x" + "ab" * 32, None, None, None)
        conn.execute(
            text("UPDATE delivery_batches SET tx_nonce = :n, tx_sent_at = :t WHERE id = :b"),
            {"n": 2**40, "t": datetime.now(UTC), "b": batch_pk},
        )
        nonce = text("SELECT tx_nonce FROM delivery_batches WHERE id = :b")
        assert conn.execute(nonce, {"b": batch_pk}).scalar_one() == 2**40
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0019")
    columns = {c["name"] for c in inspect(engine).get_columns("delivery_batches")}
    assert not columns & {"tx_nonce", "tx_prev_hash", "tx_sent_at"} and "tx_hash" in columns
    with engine.connect() as conn:
        state = text("SELECT state, tx_hash FROM delivery_batches WHERE id = :b")
        assert conn.execute(state, {"b": batch_pk}).one() == ("anchoring", "0x" + "ab" * 32)
    engine.dispose()


def test_0021_registrations_before_it_record_no_nonce_and_back(database_url: str) -> None:
    """A registration in flight before it names no nonce (the reconciler follows it by its hash); the
    downgrade drops the columns of registrations and catalogues and keeps every row."""
    migrate(database_url, "0020")
    engine = make_engine(database_url)
    with Session(engine) as session:
        reg_pk = session.execute(
            insert(Registration).values(  # a core INSERT naming the columns of that release
                content_hash="0x" + "cd" * 32,
                content_cid="bafy-0021",
                creator="0x" + "44" * 20,
                mode="server",
                state="submitted",
                params_json="{}",
                tx_hash="0x" + "ef" * 32,
            )
        ).inserted_primary_key[0]
        session.commit()
    migrate(database_url, "0021")
    row = text("SELECT tx_hash, tx_nonce, tx_prev_hash, tx_sent_at FROM asset_registrations WHERE id = :r")
    with engine.begin() as conn:
        assert conn.execute(row, {"r": reg_pk}).one() == ("0x" + "ef" * 32, None, None, None)
    for table in ("asset_registrations", "asset_catalogues"):
        assert {"tx_nonce", "tx_prev_hash", "tx_sent_at"} <= {
            c["name"] for c in inspect(engine).get_columns(table)
        }
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0020")
    for table in ("asset_registrations", "asset_catalogues"):
        columns = {c["name"] for c in inspect(engine).get_columns(table)}
        assert not columns & {"tx_nonce", "tx_prev_hash", "tx_sent_at"} and "tx_hash" in columns
    with engine.connect() as conn:
        state = text("SELECT state, tx_hash FROM asset_registrations WHERE id = :r")
        assert conn.execute(state, {"r": reg_pk}).one() == ("submitted", "0x" + "ef" * 32)
    engine.dispose()
