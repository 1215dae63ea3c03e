"""Every endpoint of the OpenAPI schema x every role (anonymous, creator, merchant, operator, auditor,
admin) against the real app: no 5xx anywhere; without credentials only the public routes answer;
auditors change nothing (no mutating call succeeds); admin routes are for admins only. Own/foreign
resource checks live in each domain's API tests (settlement role matrix, foreign operators, payees).
Audit scopes: two merchants with a source each, an auditor scoped to one, one nobody scoped and a global
one, through every listing and read an auditor can reach (API and portal)."""

from __future__ import annotations

import gzip
import re
from collections import Counter
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role
from edgeledger.deliveries.models import FraudFlag
from tests.backend.support.scenes import Scene
from tests.backend.support.stack import Caller, make_caller

pytestmark = pytest.mark.integration

#: Routes that answer without credentials, by design.
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("POST", "/auth/siwe/nonce"),
    ("POST", "/auth/siwe/verify"),
    ("POST", "/verify"),
    ("GET", "/verify/{content_hash}"),
}
#: Mutating methods an auditor may call: they only read, or act on the auditor's own credentials.
AUDITOR_MAY_POST = {
    ("POST", "/auth/api-keys"),
    ("DELETE", "/auth/api-keys/{key_id}"),
    ("POST", "/auth/siwe/nonce"),
    ("POST", "/auth/siwe/verify"),
    ("POST", "/verify"),
    ("POST", "/deliveries/proofs/line"),
    ("POST", "/audit/packages"),
    ("POST", "/compliance/exports"),
    ("POST", "/settlement/payees/{address}/claims/relay"),
}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
ROLES = (None, Role.creator, Role.merchant, Role.operator, Role.auditor, Role.admin)


def _value(name: str, schema: dict[str, Any]) -> str:
    if schema.get("type") == "integer":
        return "999999"  # nobody's: a probe must not revoke or change the callers' own resources
    if "address" in name or name in ("payee",):
        return Account.create().address
    if name.endswith("_id") or name in ("sha256", "content_hash"):
        return "0x" + "00" * 32
    return "x"


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    schema = client.get("/openapi.json").json()
    found = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                found.append((method.upper(), path, operation))
    return found


def _url(path: str, operation: dict[str, Any]) -> str:
    params = {p["name"]: p.get("schema", {}) for p in operation.get("parameters", []) if p["in"] == "path"}
    return re.sub(r"\{(\w+)\}", lambda m: _value(m.group(1), params.get(m.group(1), {})), path)


def test_every_endpoint_for_every_role(app_client: TestClient) -> None:
    callers = {role: make_caller(app_client, role, f"{role} caller") for role in ROLES if role is not None}
    operations = _operations(app_client)
    assert len(operations) > 60  # the whole API, not a sample
    outcomes: Counter[str] = Counter()
    for method, path, operation in operations:
        url = _url(path, operation)
        for role in ROLES:
            headers = callers[role].headers if role is not None else {}
            body = {"json": {}} if method in MUTATING else {}
            response = app_client.request(method, url, headers=headers, **body)
            where = f"{method} {path} as {role or 'anonymous'}: {response.status_code} {response.text[:200]}"
            assert response.status_code < 500, where
            if response.status_code >= 400:
                assert response.json()["error"]["code"], where  # machine-readable code everywhere
            if role is None and (method, path) not in PUBLIC:
                assert response.status_code == 401, where
            if role == Role.auditor and method in MUTATING and (method, path) not in AUDITOR_MAY_POST:
                assert response.status_code >= 400, where  # auditors are read-only
            if path.startswith("/admin/") and role not in (Role.admin, None):
                assert response.status_code == 403, where
            outcomes[f"{role or 'anonymous'} {response.status_code}"] += 1
    # The matrix exercised the checks, not only validation: every role met refusals and answers.
    assert outcomes["anonymous 401"] > 50
    assert outcomes["auditor 403"] > 20 and outcomes["creator 403"] > 20
    assert any(k.startswith("admin 2") for k in outcomes)


def test_own_and_foreign_resources(app_client: TestClient) -> None:
    """The resource-bearing endpoints, each with a resource of the caller's own and one of a peer of the
    same role: the own one is served, the foreign one refused (403) or hidden (404), never served."""
    from edgeledger.devtools.samples import demo_cloudfront_log

    admin = make_caller(app_client, Role.admin, "admin")
    me = {
        role: make_caller(app_client, role, f"my {role}")
        for role in (Role.creator, Role.merchant, Role.operator)
    }
    peer = {
        role: make_caller(app_client, role, f"peer {role}")
        for role in (Role.creator, Role.merchant, Role.operator)
    }

    # Ingests: one source per operator, one upload each.
    ingests = {}
    for who in (me, peer):
        operator = who[Role.operator]
        name = f"src-{operator.user_id}"
        body = {
            "name": name,
            "kind": "cdn_provider",
            "provider": "cloudfront",
            "regions": ["*"],
            "jurisdiction": "US",
            "operator_user_id": operator.user_id,
        }
        assert app_client.post("/deliveries/sources", json=body, headers=admin.headers).status_code == 201
        log, _ = demo_cloudfront_log("bafkqaaa", 1000, name, lines=5, days_ago=3)
        upload = app_client.post(
            f"/deliveries/sources/{name}/logs", files={"file": ("x.gz", log)}, headers=operator.headers
        )
        assert upload.status_code == 201, upload.text
        ingests[operator.user_id] = upload.json()["id"]
    # API keys: a second key of each creator.
    keys = {}
    for who in (me, peer):
        creator = who[Role.creator]
        made = app_client.post("/auth/api-keys", json={"label": "extra"}, headers=creator.headers)
        keys[creator.user_id] = made.json()["id"]

    def check(role: Role, method: str, own: str, foreign: str) -> None:
        caller = me[role]
        served = app_client.request(method, own, headers=caller.headers)
        refused = app_client.request(method, foreign, headers=caller.headers)
        assert served.status_code < 300, (own, served.text)
        assert refused.status_code in (403, 404), (foreign, refused.text)
        assert refused.json()["error"]["code"], refused.text

    op_me, op_peer = me[Role.operator].user_id, peer[Role.operator].user_id
    check(
        Role.operator,
        "GET",
        f"/deliveries/ingests/{ingests[op_me]}",
        f"/deliveries/ingests/{ingests[op_peer]}",
    )
    check(
        Role.operator,
        "GET",
        f"/deliveries/ingests/{ingests[op_me]}/quarantine",
        f"/deliveries/ingests/{ingests[op_peer]}/quarantine",
    )
    check(
        Role.creator,
        "GET",
        f"/settlement/payees/{me[Role.creator].account.address}/earnings",
        f"/settlement/payees/{peer[Role.creator].account.address}/earnings",
    )
    check(
        Role.merchant,
        "GET",
        f"/settlement/settlements?merchant_user_id={me[Role.merchant].user_id}",
        f"/settlement/settlements?merchant_user_id={peer[Role.merchant].user_id}",
    )
    check(
        Role.merchant,
        "GET",
        f"/settlement/cases?merchant_user_id={me[Role.merchant].user_id}",
        f"/settlement/cases?merchant_user_id={peer[Role.merchant].user_id}",
    )
    cr_me, cr_peer = me[Role.creator].user_id, peer[Role.creator].user_id
    check(Role.creator, "DELETE", f"/auth/api-keys/{keys[cr_me]}", f"/auth/api-keys/{keys[cr_peer]}")


# --- audit scopes: two merchants, each with its own source ------------------------------------------


def _get(client: TestClient, path: str, caller: Caller, **params: Any) -> Any:
    response = client.get(path, params=params, headers=caller.headers)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def _refused(client: TestClient, path: str, caller: Caller, **params: Any) -> None:
    response = client.get(path, params=params, headers=caller.headers)
    assert response.status_code == 403, (path, response.text)
    assert response.json()["error"]["code"] == "out_of_scope", response.text


def test_audit_scopes_filter_every_listing_and_read(scene: Scene) -> None:
    """Merchant A (the scene's shop, source cf-shop, settled) and merchant B (source cf-other, anchored):
    an auditor scoped to A and its source sees exactly A's rows in every listing and is refused B's
    resources; an auditor nobody scoped sees empty listings and is refused every named resource; a
    global auditor (granted by an admin) sees both."""
    from edgeledger.devtools.samples import demo_cloudfront_log

    client, admin = scene.client, scene.admin
    merchant_a = scene.merchant
    merchant_b = make_caller(client, Role.merchant, "Other shop")
    operator_b = make_caller(client, Role.operator, "Other operator")
    source_b = {
        "name": "cf-other",
        "kind": "cdn_provider",
        "provider": "cloudfront",
        "regions": ["*"],
        "jurisdiction": "US",
        "operator_user_id": operator_b.user_id,
    }
    assert client.post("/deliveries/sources", json=source_b, headers=admin.headers).status_code == 201
    host_b = {"host": "other.example", "merchant_user_id": merchant_b.user_id}
    assert client.post("/deliveries/merchant-hosts", json=host_b, headers=admin.headers).status_code == 201
    authorised = client.post(
        "/deliveries/merchant-sources", json={"source": "cf-other"}, headers=merchant_b.headers
    )
    assert authorised.status_code == 201, authorised.text
    log, request_ids_b = demo_cloudfront_log("bafkqaaa", 1000, "other", lines=20, days_ago=3)
    log = gzip.compress(gzip.decompress(log).replace(b"shop.example", b"other.example"))
    upload = client.post(
        "/deliveries/sources/cf-other/logs", files={"file": ("other.gz", log)}, headers=operator_b.headers
    )
    assert upload.status_code == 201, upload.text
    closed = client.post("/deliveries/batches/close", json={"anchor_now": True}, headers=admin.headers)
    assert closed.status_code == 200, closed.text

    batches = _get(client, "/deliveries/batches", admin)
    batch_a = next(b for b in batches if b["source"] == "cf-shop")
    batch_b = next(b for b in batches if b["source"] == "cf-other" and b["state"] in ("anchored", "final"))
    # One fraud flag on each merchant's batch (how the signals job stores them), and one proof read and
    # one export of each source in the compliance log.
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        for batch in (batch_a, batch_b):
            session.add(FraudFlag(batch_pk=batch["id"], signal="burst", subject="test", record_count=1))
        session.commit()
    for source, request_id, batch in (
        ("cf-shop", scene.request_ids[1], batch_a),
        ("cf-other", request_ids_b[1], batch_b),
    ):
        _get(client, "/deliveries/proofs", admin, source=source, request_id=request_id)
        assert (
            client.get(f"/deliveries/batches/{batch['batch_id']}/export", headers=admin.headers).status_code
            == 200
        )

    everyone = make_caller(client, Role.auditor, "Global auditor")  # granted the global scope by an admin
    nobody = make_caller(client, Role.auditor, "Unscoped auditor", global_scope=False)
    only_a = make_caller(client, Role.auditor, "Auditor of A", global_scope=False)
    scope_a = {"merchants": [merchant_a.user_id], "sources": [batch_a["source_id"]]}
    scoped = client.put(f"/admin/users/{only_a.user_id}/scope", json=scope_a, headers=admin.headers)
    assert scoped.status_code == 200, scoped.text

    def listings(caller: Caller) -> dict[str, set[Any]]:
        events = _get(client, "/compliance/events", caller, limit=1000)["items"]
        return {
            "sources": {s["name"] for s in _get(client, "/deliveries/sources", caller)} - {"compliance"},
            "batches": {b["source"] for b in _get(client, "/deliveries/batches", caller)}
            & {"cf-shop", "cf-other"},
            "flags": {f["batch_id"] for f in _get(client, "/deliveries/flags", caller)},
            "receipts": {r["host"] for r in _get(client, "/deliveries/receipts", caller)},
            "hosts": {h["host"] for h in _get(client, "/deliveries/merchant-hosts", caller)},
            "merchant_sources": {m["source"] for m in _get(client, "/deliveries/merchant-sources", caller)},
            "ingests": {i["source_pk"] for i in _get(client, "/deliveries/ingests", caller)["items"]},
            "settlements": {
                s["merchant_user_id"] for s in _get(client, "/settlement/settlements", caller)["items"]
            },
            "accounts": {a["merchant_user_id"] for a in _get(client, "/settlement/accounts", caller)},
            "cases": {c["merchant_user_id"] for c in _get(client, "/settlement/cases", caller)},
            "events": {
                e["subject"].split("/")[0] for e in events if e["subject"].startswith(("record:", "batch:"))
            },
        }

    both = listings(everyone)
    assert both["sources"] >= {"cf-shop", "cf-other"}
    assert both["batches"] == {"cf-shop", "cf-other"}
    assert both["flags"] == {batch_a["batch_id"], batch_b["batch_id"]}
    assert both["receipts"] == {"shop.example", "other.example"}
    assert both["hosts"] == {"shop.example", "other.example"}
    assert both["merchant_sources"] == {"cf-shop", "cf-other"}
    assert len(both["ingests"]) == 2
    assert both["settlements"] == {merchant_a.user_id} == both["accounts"]
    assert both["events"] == {
        "record:cf-shop",
        "record:cf-other",
        f"batch:{batch_a['batch_id']}",
        f"batch:{batch_b['batch_id']}",
    }

    mine = listings(only_a)
    assert mine["sources"] == {"cf-shop"}
    assert mine["batches"] == {"cf-shop"}
    assert mine["flags"] == {batch_a["batch_id"]}
    assert mine["receipts"] == {"shop.example"}
    assert mine["hosts"] == {"shop.example"}
    assert mine["merchant_sources"] == {"cf-shop"}
    assert len(mine["ingests"]) == 1 and mine["ingests"] < both["ingests"]
    assert mine["settlements"] == {merchant_a.user_id} == mine["accounts"]
    assert mine["cases"] <= {merchant_a.user_id}
    assert mine["events"] == {"record:cf-shop", f"batch:{batch_a['batch_id']}"}

    assert listings(nobody) == {key: set() for key in both}

    # Named resources: A's are served to A's auditor; B's refused; everything refused to the unscoped.
    settlement_a = _get(client, "/settlement/settlements", admin)["items"][0]["id"]
    event_b = next(
        e["event_id"]
        for e in _get(client, "/compliance/events", admin, limit=1000)["items"]
        if e["subject"] == f"batch:{batch_b['batch_id']}"
    )
    event_a = next(
        e["event_id"]
        for e in _get(client, "/compliance/events", admin, limit=1000)["items"]
        if e["subject"] == f"batch:{batch_a['batch_id']}"
    )
    reads_a = [
        ("/deliveries/sources/cf-shop", {}),
        (f"/deliveries/batches/{batch_a['batch_id']}", {}),
        (f"/deliveries/batches/{batch_a['batch_id']}/flags", {}),
        (f"/deliveries/batches/{batch_a['batch_id']}/export", {}),
        ("/deliveries/proofs", {"source": "cf-shop", "request_id": scene.request_ids[1]}),
        (f"/settlement/settlements/{settlement_a}", {}),
        (f"/settlement/accounts/{merchant_a.user_id}", {}),
        (f"/compliance/events/{event_a}", {}),
    ]
    reads_b = [
        ("/deliveries/sources/cf-other", {}),
        (f"/deliveries/batches/{batch_b['batch_id']}", {}),
        (f"/deliveries/batches/{batch_b['batch_id']}/flags", {}),
        (f"/deliveries/batches/{batch_b['batch_id']}/export", {}),
        ("/deliveries/flags", {"batch": batch_b["batch_id"]}),
        ("/deliveries/proofs", {"source": "cf-other", "request_id": request_ids_b[1]}),
        ("/settlement/settlements", {"merchant_user_id": merchant_b.user_id}),
        (f"/compliance/events/{event_b}", {}),
        (f"/compliance/events/{event_b}/proof", {}),
    ]
    for path, params in reads_a:
        _get(client, path, only_a, **params)
        _get(client, path, everyone, **params)
        _refused(client, path, nobody, **params)
    for path, params in reads_b:
        _refused(client, path, only_a, **params)
        _refused(client, path, nobody, **params)

    # The portal: the same scope, page by page.
    for caller, sees in ((only_a, {"cf-shop"}), (nobody, set()), (everyone, {"cf-shop", "cf-other"})):
        login = client.post("/portal/login", data={"api_key": caller.api_key}, follow_redirects=False)
        assert login.status_code == 303, login.text
        sources_page = client.get("/portal/sources").text
        assert {name for name in ("cf-shop", "cf-other") if name in sources_page} == sees
        settlements_page = client.get("/portal/settlements").text
        assert ("No settlements in your scope" in settlements_page) == (caller is nobody)
        batch_page = client.get(f"/portal/batches/{batch_b['batch_id']}")
        assert batch_page.status_code == (200 if "cf-other" in sees else 404)
        client.post("/portal/logout")
