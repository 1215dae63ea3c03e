"""Upload limits of log ingestion (deliveries/limits.py) on SQLite and PostgreSQL: hostile uploads answered
with their 4xx and code through the API (raw body, multipart, stream) and the CLI, what a refused upload
leaves stored (the chunks committed before the limit tripped, whole; nothing of the chunk being read),
earlier uploads untouched, and memory bounded however many comment or junk lines arrive.

The hostile inputs are benchmarks/ingest_bombs.py's (smaller where the size does not matter); these tests
need only the database: the API takes logs without a chain or an IPFS node.
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from benchmarks.ingest_bombs import (
    HEADER,
    cloudfront_line,
    comment_bomb,
    emoji_bomb,
    good_log,
    junk_lines,
    long_line,
    ratio_bomb,
)
from edgeledger.auth.models import Role
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.deliveries import ingest as ingestion
from edgeledger.deliveries.ingest import ingest_log
from edgeledger.deliveries.limits import IngestLimitError
from edgeledger.deliveries.models import (
    DeliveryRecordRow,
    DeliverySource,
    IngestFile,
    IngestState,
    QuarantinedLineRow,
)
from edgeledger.ledger.ids import source_id_for
from edgeledger.main import create_app
from tests.backend.support.stack import Caller, make_caller

DEFAULTS = Settings()


@pytest.fixture
def settings(database_url: str, db_engine: Engine, tmp_path: Path) -> Settings:
    """The API's settings here: the test database, default limits, no chain (log uploads need none)."""
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        pseudonym_master_key="22" * 32,
        deployment_file=tmp_path / "no-deployment.json",
    )


def make_source(session: Session, name: str, operator_user_id: int | None = None) -> DeliverySource:
    source = DeliverySource(
        source_id=source_id_for(name),
        name=name,
        kind="cdn_provider",
        provider="cloudfront",
        operator="0x" + "11" * 20,
        signer="0x" + "22" * 20,
        regions_bitmap="0x0",
        jurisdiction="DE",
        status="active",
        operator_user_id=operator_user_id,
    )
    session.add(source)
    session.commit()
    return source


def count(engine: Engine, model: Any, ingest_id: int) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).where(model.ingest_file_pk == ingest_id)) or 0


def check_counts(report: dict[str, Any]) -> None:
    assert report["lines"] == (
        report["records_new"] + report["duplicates"] + report["quarantined"] + report["skipped"]
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def operator(client: TestClient) -> Caller:
    caller = make_caller(client, Role.operator, "node operator")
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        make_source(session, "cf-1", caller.user_id)
    return caller


def node_line(n: int) -> str:
    return json.dumps(
        {
            "v": 1,
            "request_id": f"node-{n}",
            "ts": 1_714_521_600_000 + n,
            "edge_location": "FRA1",
            "country": "DE",
            "host": "media.example.com",
            "uri": "/media/a.mp4",
            "body_bytes": 1000,
            "status": 200,
            "cache": "HIT",
            "client_ip": "198.51.100.23",
        }
    )


# name -> (input, status, code, limit, line it trips on (None: wherever the read-ahead stops))
BOMBS: dict[str, tuple[Callable[[], bytes], int, str, str, int | None]] = {
    "comment bomb (6 KB gzip)": (
        comment_bomb,
        413,
        "upload_ratio_too_high",
        "INGEST_MAX_COMPRESSION_RATIO",
        None,
    ),
    "emoji bomb": (
        lambda: emoji_bomb(lines=10_050, width=100),
        422,
        "upload_too_many_quarantined",
        "INGEST_MAX_QUARANTINED_LINES",
        2 + 10_001,
    ),
    "high-ratio gzip": (
        lambda: ratio_bomb(blank_mib=64),
        413,
        "upload_ratio_too_high",
        "INGEST_MAX_COMPRESSION_RATIO",
        None,
    ),
    "over-long line": (
        lambda: long_line(chars=200_000),
        422,
        "upload_line_too_long",
        "INGEST_MAX_LINE_CHARS",
        4,
    ),
    "junk lines": (
        lambda: junk_lines(lines=10_050),
        422,
        "upload_too_many_quarantined",
        "INGEST_MAX_QUARANTINED_LINES",
        2 + 10_001,
    ),
}
CONFIGURED = {
    "INGEST_MAX_COMPRESSION_RATIO": DEFAULTS.ingest_max_compression_ratio,
    "INGEST_MAX_QUARANTINED_LINES": DEFAULTS.ingest_max_quarantined_lines,
    "INGEST_MAX_LINE_CHARS": DEFAULTS.ingest_max_line_chars,
}


def check_refusal(
    client: TestClient, caller: Caller, response: Any, status: int, code: str, limit: str, line: int | None
) -> dict[str, Any]:
    """The refusal says which limit, its value and where; the ingest is ``failed`` with the same code
    and its counts are exactly the rows it left."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    details = error["details"]
    assert error["code"] == code
    assert details["limit"] == limit and details["configured"] == CONFIGURED.get(limit, details["configured"])
    assert limit in error["message"] and f"line {details['line']:,}" in error["message"]
    if line is not None:
        assert details["line"] == line
    assert details["received_bytes"] > 0 and details["line"] > 0
    report = client.get(f"/deliveries/ingests/{details['ingest_id']}", headers=caller.headers).json()
    assert report["state"] == "failed" and report["error_code"] == code
    assert limit in report["error_message"]
    check_counts(report)
    engine = client.app.state.engine  # type: ignore[attr-defined]
    assert count(engine, DeliveryRecordRow, report["id"]) == report["records_new"]
    assert count(engine, QuarantinedLineRow, report["id"]) == report["quarantined"]
    assert report["quarantined"] <= DEFAULTS.ingest_max_quarantined_lines
    return report


def test_hostile_uploads_are_refused_with_their_code_and_earlier_uploads_stay(
    client: TestClient, operator: Caller
) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    first = client.post(
        "/deliveries/sources/cf-1/logs?name=good.log.gz",
        headers={**operator.headers, "Content-Type": "application/octet-stream"},
        content=good_log(100),
    )
    assert first.status_code == 201, first.text
    good = first.json()
    assert good["records_new"] == 100
    reports = {}
    for name, (make, status, code, limit, line) in BOMBS.items():
        response = client.post(
            "/deliveries/sources/cf-1/logs",
            params={"name": name},
            headers={**operator.headers, "Content-Type": "application/octet-stream"},
            content=make(),
        )
        reports[name] = check_refusal(client, operator, response, status, code, limit, line)
        # the earlier upload is untouched: its report and its rows
        assert client.get(f"/deliveries/ingests/{good['id']}", headers=operator.headers).json() == good
        assert count(engine, DeliveryRecordRow, good["id"]) == 100
    # nothing of a refused upload but whole chunks: the bombs without records left none, the junk file
    # the first chunk of 10,000 quarantined lines (the limit: the 10,001st tripped in the next chunk)
    assert all(r["records_new"] == 0 for r in reports.values())
    assert reports["comment bomb (6 KB gzip)"]["quarantined"] == 0
    assert reports["over-long line"]["quarantined"] == 0
    assert reports["junk lines"]["quarantined"] == 10_000
    assert reports["comment bomb (6 KB gzip)"]["size_bytes"] == len(comment_bomb()) < 7_000


def test_multipart_and_streamed_uploads_meet_the_same_limits(client: TestClient, operator: Caller) -> None:
    response = client.post(
        "/deliveries/sources/cf-1/logs",
        headers=operator.headers,
        files={"file": ("bomb.log.gz", comment_bomb(), "application/gzip")},
    )
    ratio = ("upload_ratio_too_high", "INGEST_MAX_COMPRESSION_RATIO")
    check_refusal(client, operator, response, 413, *ratio, None)

    text = ("".join(node_line(n) + "\n" for n in range(5)) + "y" * 100_000 + "\n").encode()

    def body() -> Iterator[bytes]:  # chunked transfer
        for start in range(0, len(text), 4096):
            yield text[start : start + 4096]

    url = "/deliveries/sources/cf-1/stream?name=live"
    response = client.post(url, headers=operator.headers, content=body())
    too_long = ("upload_line_too_long", "INGEST_MAX_LINE_CHARS")
    report = check_refusal(client, operator, response, 422, *too_long, 6)
    assert report["records_new"] == 0  # the five good lines were in the chunk being read: dropped


@pytest.mark.parametrize(
    ("setting", "limit", "code"),
    [
        ("ingest_max_decompressed_bytes", "INGEST_MAX_DECOMPRESSED_BYTES", "upload_decompressed_too_large"),
        ("ingest_max_lines", "INGEST_MAX_LINES", "upload_too_many_lines"),
    ],
)
def test_decompressed_size_and_line_count_limits_are_configurable(
    settings: Settings, setting: str, limit: str, code: str
) -> None:
    configured = 20_000 if setting == "ingest_max_decompressed_bytes" else 50
    app = create_app(settings.model_copy(update={setting: configured}))
    try:
        with TestClient(app) as client:
            caller = make_caller(client, Role.operator, "operator")
            with Session(app.state.engine) as session:
                make_source(session, "cf-2", caller.user_id)
            headers = {**caller.headers, "Content-Type": "application/octet-stream"}
            under = gzip.compress((HEADER + "".join(cloudfront_line(n) for n in range(40))).encode())
            url = "/deliveries/sources/cf-2/logs"
            response = client.post(f"{url}?name=ok.log", headers=headers, content=under)
            assert response.status_code == 201 and response.json()["records_new"] == 40  # under both
            response = client.post(
                "/deliveries/sources/cf-2/logs?name=x.log", headers=headers, content=good_log(1_000)
            )
            assert response.status_code == 413, response.text
            error = response.json()["error"]
            assert (error["code"], error["details"]["limit"]) == (code, limit)
            assert error["details"]["configured"] == configured
            assert f"{limit} = {configured:,}" in error["message"]
            if setting == "ingest_max_lines":
                assert error["details"]["line"] == 51
            else:
                assert error["details"]["decompressed_bytes"] > 20_000
            report = client.get(
                f"/deliveries/ingests/{error['details']['ingest_id']}", headers=caller.headers
            ).json()
            assert (report["state"], report["error_code"], report["records_new"]) == ("failed", code, 0)
    finally:
        app.state.engine.dispose()


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_MAX_LINES", "7")
    monkeypatch.setenv("INGEST_MAX_QUARANTINED_LINES", "0")
    monkeypatch.setenv("INGEST_MAX_COMPRESSION_RATIO", "20")
    loaded = Settings.from_env(env_file=None)
    assert (loaded.ingest_max_lines, loaded.ingest_max_quarantined_lines) == (7, 0)
    assert loaded.ingest_max_compression_ratio == 20
    monkeypatch.setenv("INGEST_MAX_LINE_CHARS", "2000000")  # beyond what the parsers read in one piece
    with pytest.raises(ValidationError):
        Settings.from_env(env_file=None)


# --------------------------------------------------------------------------------------------------------
# What a refused upload leaves stored (ingest_log on both databases)
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def source(db_session: Session) -> DeliverySource:
    return make_source(db_session, "cf-3")


def cloudfront_log(lines: int, extra: str = "") -> io.BytesIO:
    return io.BytesIO((HEADER + "".join(cloudfront_line(n) for n in range(lines)) + extra).encode())


@pytest.mark.parametrize("junk", ["parser", "repeats"])
def test_stored_chunks_stay_whole_and_the_chunk_being_read_is_dropped(
    db_session: Session,
    settings: Settings,
    source: DeliverySource,
    monkeypatch: pytest.MonkeyPatch,
    junk: str,
) -> None:
    monkeypatch.setattr(ingestion, "CHUNK_RECORDS", 100)
    limited = settings.model_copy(update={"ingest_max_quarantined_lines": 5})
    # 250 good lines, then 10 junk lines: quarantined by the parser while read, or in-file repeats of a
    # request id (quarantined when the last chunk is written)
    extra = "not a log line\n" * 10 if junk == "parser" else cloudfront_line(0) * 10
    with pytest.raises(IngestLimitError) as caught:
        ingest_log(db_session, limited, source, cloudfront_log(250, extra), name="bad.log", created_by=None)
    error = caught.value
    assert (error.code, error.status, error.details["limit"]) == (
        "upload_too_many_quarantined",
        422,
        "INGEST_MAX_QUARANTINED_LINES",
    )
    assert error.details["line"] == 2 + 250 + 6  # the sixth junk line
    failed = db_session.scalars(select(IngestFile)).one()
    db_session.refresh(failed)
    assert failed.state == IngestState.failed and failed.error_code == "upload_too_many_quarantined"
    assert error.details["ingest_id"] == failed.id
    # two whole chunks of 100 records stored; the third (50 records and the junk) dropped
    assert (failed.records_new, failed.quarantined, failed.lines, failed.skipped) == (200, 0, 202, 2)
    stored = db_session.scalars(select(DeliveryRecordRow.line_number)).all()
    assert sorted(stored) == list(range(3, 203))
    assert db_session.scalar(select(func.count()).select_from(QuarantinedLineRow)) == 0

    # the same log without the junk completes it: what was stored counts as duplicates
    done = ingest_log(db_session, limited, source, cloudfront_log(250), name="good.log", created_by=None)
    assert (done.state, done.records_new, done.duplicates) == (IngestState.done, 50, 200)


def test_memory_stays_bounded_however_many_comment_or_junk_lines_arrive(
    db_session: Session, settings: Settings, source: DeliverySource
) -> None:
    """Limits out of reach, so each file is read to its end; Python's own allocations are traced."""
    open_ended = settings.model_copy(
        update={
            "ingest_max_decompressed_bytes": 1 << 50,
            "ingest_max_compression_ratio": 1 << 40,
            "ingest_max_quarantined_lines": 1 << 40,
        }
    )
    # 1,000,000 comment lines (2 MB); 4,000 lines of 2,000 emoji (32 MB as UTF-8, all quarantined)
    comments = io.BytesIO((HEADER + "#\n" * 1_000_000).encode())
    emoji = io.BytesIO(gzip.decompress(emoji_bomb(lines=4_000, width=2_000)))
    peaks = []
    for name, data in (("comments.log", comments), ("emoji.log", emoji)):
        tracemalloc.start()
        try:
            report = ingest_log(db_session, open_ended, source, data, name=name, created_by=None)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert report.state == IngestState.done
    assert report.quarantined == 4_000
    # before the limits every comment line's raw text was kept until a chunk filled (never, here), and
    # all 4,000 emoji lines were held at once, each twice (its raw text and its quarantined copy)
    # measured: 0.5 MiB and 18 MiB
    assert peaks[0] < 4 * 2**20, peaks
    assert peaks[1] < 32 * 2**20, peaks


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------


def test_cli_prints_the_reason_in_one_line(operator: Caller, live_api: str, tmp_path: Path) -> None:
    long = tmp_path / "long.log"
    rest = "".join(cloudfront_line(n) for n in range(3, 20_000)).encode()  # 6 MB the API need not read
    long.write_bytes(long_line(chars=200_000) + rest)
    bomb = tmp_path / "bomb.log.gz"
    bomb.write_bytes(comment_bomb())
    good = tmp_path / "good.log.gz"
    good.write_bytes(good_log(10))
    args = ["ingest", str(long), str(bomb), str(good), "--source", "cf-1"]
    result = CliRunner().invoke(cli_app, [*args, "--api", live_api, "--api-key", operator.api_key])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if ": error " in line]
    assert len(errors) == 2
    assert errors[0].startswith(
        "long.log: error 422 upload_line_too_long: line 4 is longer than 65,536 characters "
        "(INGEST_MAX_LINE_CHARS = 65,536; tripped at line 4, "
    )
    assert errors[1].startswith("bomb.log.gz: error 413 upload_ratio_too_high: the gzip data expands more")
    assert "INGEST_MAX_COMPRESSION_RATIO = 100" in errors[1]
    assert json.loads(result.stdout.splitlines()[-1])["records_new"] == 10  # the good file still went in
