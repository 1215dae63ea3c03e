"""Auditor portal pages through HTTP (TestClient) on a real chain, IPFS node and database: sign-in and
roles, every page, badges that follow the chain rather than the database, scope filtering, line lookups
that are logged and never echo the client IP, rate limits."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role
from edgeledger.deliveries.models import DeliveryBatch
from edgeledger.main import create_app
from edgeledger.settlement.models import Settlement
from tests.backend.support.scenes import Scene
from tests.backend.support.stack import Caller, free_port, make_caller

pytestmark = pytest.mark.integration
IP = re.compile(r"\b(?:192\.0\.2|198\.51\.100|203\.0\.113)\.\d{1,3}\b")


def _login(client: TestClient, caller: Caller) -> None:
    response = client.post("/portal/login", data={"api_key": caller.api_key}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/portal/"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/portal" in cookie


def _page(client: TestClient, path: str, status: int = 200) -> str:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == status, response.text[:500]
    assert response.headers["cache-control"] == "no-store"
    assert not IP.search(response.text), f"a client IP on {path}"
    return response.text


def _badges(html: str) -> list[str]:
    return re.findall(r'data-verified="(\w+)"', html)


def test_sign_in_roles_and_logout(scene: Scene) -> None:
    client = scene.client
    assert client.get("/portal/", follow_redirects=False).headers["location"] == "/portal/login"
    bad = client.post("/portal/login", data={"api_key": "el_nope"}, follow_redirects=False)
    assert bad.status_code == 401 and "not valid" in bad.text
    refused = client.post("/portal/login", data={"api_key": scene.merchant.api_key}, follow_redirects=False)
    assert refused.status_code == 403 and "auditors and admins" in refused.text
    _login(client, scene.auditor)
    assert "Overview" in _page(client, "/portal/")
    client.post("/portal/logout", follow_redirects=False)
    assert client.get("/portal/", follow_redirects=False).status_code == 303  # the session is revoked


def test_revoking_the_api_key_ends_the_portal_sessions_opened_with_it(scene: Scene) -> None:
    client = scene.client
    created = client.post("/auth/api-keys", json={"label": "portal"}, headers=scene.auditor.headers)
    assert created.status_code == 201, created.text
    key = created.json()
    _login(client, Caller(scene.auditor.account, key["key"], scene.auditor.user_id))
    assert "Overview" in _page(client, "/portal/")
    revoked = client.delete(f"/auth/api-keys/{key['id']}", headers=scene.auditor.headers)
    assert revoked.status_code == 204, revoked.text
    # At once, not when the session would have expired.
    assert client.get("/portal/", follow_redirects=False).headers["location"] == "/portal/login"


def test_pages_render_and_badges_come_from_the_chain(scene: Scene) -> None:
    client = scene.client
    _login(client, scene.auditor)
    overview = _page(client, "/portal/")
    assert overview.count("<svg") == 3 and "chart-bytes" in overview
    sources = _page(client, "/portal/sources")
    assert "cf-shop" in sources and "chain head matches" in sources and "✔ continuous" in sources
    batch_id = re.search(r"/portal/batches/(0x[0-9a-f]{64})", sources).group(1)  # type: ignore[union-attr]
    batch = _page(client, f"/portal/batches/{batch_id}")
    assert _badges(batch) == ["ok"] and "root anchored on chain" in batch
    settlements = _page(client, "/portal/settlements")
    assert "ok" in _badges(settlements) and "vault holds this root" in settlements
    # Merchants by name, totals in their token (not a bare id and minor units).
    assert re.search(r"<td>[^<]+ \(#\d+\)</td>", settlements) and " tUSDC</td>" in settlements
    assets = _page(client, "/portal/assets")
    assert _badges(assets) == ["ok"]
    asset_id = re.search(r'/portal/assets/(\d+)"', assets).group(1)  # type: ignore[union-attr]
    page = _page(client, f"/portal/assets/{asset_id}")
    assert "registry record matches" in page and "(IPFS import profile legacy-cidv1)" in page
    _page(client, "/portal/cases")

    # Tamper with the database: the badges follow the chain, not our rows.
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        session.execute(
            update(DeliveryBatch).where(DeliveryBatch.batch_id == batch_id).values(root="0x" + "ee" * 32)
        )
        session.execute(update(Settlement).where(Settlement.root.is_not(None)).values(root="0x" + "dd" * 32))
        session.commit()
    assert _badges(_page(client, f"/portal/batches/{batch_id}")) == ["bad"]
    assert "bad" in _badges(_page(client, "/portal/settlements"))


def test_an_unreachable_chain_shows_unverified_not_an_error(scene: Scene) -> None:
    dead = scene.settings.model_copy(update={"eth_rpc_url": f"http://127.0.0.1:{free_port()}"})
    app = create_app(dead)
    with TestClient(app) as client:
        _login(client, scene.auditor)
        html = _page(client, "/portal/sources")
        assert "unverified (chain unreachable)" in html and set(_badges(html)) == {"unknown"}
    app.state.engine.dispose()


def test_scoped_auditors_see_only_their_merchants_and_sources(scene: Scene) -> None:
    client = scene.client
    other = make_caller(client, Role.merchant, "Other shop")
    scoped = make_caller(client, Role.auditor, "Scoped")
    scope = {"merchants": [other.user_id], "sources": ["0x" + "00" * 31 + "01"]}
    assert (
        client.put(
            f"/admin/users/{scoped.user_id}/scope", json=scope, headers=scene.admin.headers
        ).status_code
        == 200
    )
    _login(client, scoped)
    assert "No settlements in your scope" in _page(client, "/portal/settlements")
    assert "No sources in your scope" in _page(client, "/portal/sources")
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        batch_id = session.scalars(select(DeliveryBatch.batch_id)).first()
    assert "in your scope" in _page(client, f"/portal/batches/{batch_id}", status=404)
    lookup = client.get("/portal/lookup", params={"source": "cf-shop", "request_id": scene.request_ids[1]})
    assert lookup.status_code == 400 and "outside your audit scope" in lookup.text


def test_line_lookup_is_logged_and_never_echoes_the_client_ip(scene: Scene) -> None:
    client = scene.client
    _login(client, scene.auditor)
    first_ip = scene.lines[0].split("\t")[4]
    line = next(line for line in scene.lines if line.split("\t")[4] != first_ip)
    response = client.post("/portal/lookup", data={"source": "cf-shop", "line": line})
    assert response.status_code == 200, response.text[:500]
    assert 'id="proof-data"' in response.text and line.split("\t")[14] in response.text
    assert "root anchored on chain" in response.text  # the server's own chain check, next to the browser's
    assert line.split("\t")[4] not in response.text
    events = client.get(
        "/compliance/events", params={"action": "read_raw"}, headers=scene.admin.headers
    ).json()
    assert any(e["subject"] == f"record:cf-shop/{line.split(chr(9))[14]}" for e in events["items"])
    missing = client.get("/portal/lookup", params={"source": "cf-shop", "request_id": "no-such-request"})
    assert missing.status_code == 400 and "lookup-error" in missing.text


def test_portal_requests_are_rate_limited(scene: Scene) -> None:
    tight = scene.settings.model_copy(update={"rate_limit_audit_per_minute": 3})
    app = create_app(tight)
    with TestClient(app) as client:
        codes = [client.get("/portal/login").status_code for _ in range(4)]
    app.state.engine.dispose()
    assert codes == [200, 200, 200, 429]


def test_overview_chart_has_a_bar_per_region_and_day_each_region_its_own_colour(scene: Scene) -> None:
    from edgeledger.deliveries.regions import REGION_CODES

    client = scene.client
    _login(client, scene.auditor)
    chart = _page(client, "/portal/").split('class="chart chart-bytes"')[1].split("</svg>")[0]
    bars = re.findall(
        r'<rect class="bar" data-region="([^"]+)" data-day="([^"]+)"[^>]* fill="([^"]+)"', chart
    )
    assert bars, chart[:500]
    # Series are pricing regions and groups are days (not the other way round).
    assert {region for region, _, _ in bars} <= set(REGION_CODES)
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) for _, day, _ in bars)
    fills = {region: fill for region, _, fill in bars}
    assert len(set(fills.values())) == len(fills)
    legend = re.findall(r'<g class="legend" data-series="([^"]+)"', chart)
    assert sorted(legend) == sorted(fills)


def test_settlement_detail_page_and_its_statement(scene: Scene) -> None:
    client = scene.client
    _login(client, scene.auditor)
    listing = _page(client, "/portal/settlements")
    with Session(client.app.state.engine, expire_on_commit=False) as session:  # type: ignore[attr-defined]
        row = session.scalars(select(Settlement).where(Settlement.tx_hash.is_not(None))).one()
        assert row.root and row.block_number
        settlement_id = row.id
        # A release of the period's held reserve, as settlement/held.py would add it.
        release = Settlement(
            merchant_user_id=row.merchant_user_id,
            period_start=row.period_start,
            period_end=row.period_end,
            period_id=row.period_id,
            kind="release",
            sequence=1,
            funded_by_pk=row.id,
            state="computed",
            merchant_address=row.merchant_address,
            token=row.token,
            total=1_250_000,
        )
        session.add(release)
        session.commit()

    assert f'<a href="/portal/settlements/{settlement_id}">#{settlement_id}</a>' in listing
    page = _page(client, f"/portal/settlements/{settlement_id}")
    assert _badges(page) == ["ok"] and "vault holds this root" in page
    assert f"Shop (#{scene.merchant.user_id})" in page and "tUSDC, 6 decimals" in page
    total = re.search(r'class="num total" data-minor="(\d+)">([^<]+)<', page)
    assert total is not None and int(total.group(1)) == row.total
    assert total.group(2) == f"{row.total // 10**6}.{row.total % 10**6:06d} tUSDC"
    assert row.root in page and row.tx_hash in page and f"block {row.block_number}" in page
    assert re.search(r'class="challenge">(running: claims open at|closed: claims open since) \d{4}-', page)
    assert f'href="/portal/settlements/{release.id}">#{release.id}</a></td><td>release</td>' in page
    assert "1.250000 tUSDC" in page  # the related release's total, in the token too
    for batch_id in re.findall(r'href="/portal/batches/(0x[0-9a-f]{64})"', page):
        assert batch_id in row.batch_ids_json
    released = _page(client, f"/portal/settlements/{release.id}")
    assert f'class="funded-by" href="/portal/settlements/{settlement_id}"' in released
    assert "not posted yet (computed)" in released and "none (computed)" in released  # no statement yet

    # The statement link: the HTML statement, its one style element allowed by hash, no script.
    assert f'href="/portal/settlements/{settlement_id}/statement"' in page
    statement = client.get(f"/portal/settlements/{settlement_id}/statement")
    assert statement.status_code == 200 and statement.headers["cache-control"] == "no-store"
    css = statement.text.split("<style>")[1].split("</style>")[0]
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in statement.headers["content-security-policy"]
    assert "<script" not in statement.text and "tUSDC" in statement.text
    assert _page(client, f"/portal/settlements/{release.id}/statement", status=404).count("no statement")

    # Out of scope or unknown: 404, like batches.
    assert "in your scope" in _page(client, "/portal/settlements/999999", status=404)
    scoped = make_caller(client, Role.auditor, "Scoped")
    other = make_caller(client, Role.merchant, "Other shop")
    scope = {"merchants": [other.user_id], "sources": []}
    client.put(f"/admin/users/{scoped.user_id}/scope", json=scope, headers=scene.admin.headers)
    _login(client, scoped)
    assert "in your scope" in _page(client, f"/portal/settlements/{settlement_id}", status=404)
    _page(client, f"/portal/settlements/{settlement_id}/statement", status=404)
