"""Every endpoint of the OpenAPI schema x every role (anonymous, creator, merchant, operator, auditor,
admin) against the real app: no 5xx anywhere; without credentials only the public routes answer;
auditors change nothing (no mutating call succeeds); admin routes are for admins only. Own/foreign
resource checks live in each domain's API tests (settlement role matrix, foreign operators, payees)."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from edgeledger.auth.models import Role
from tests.backend.support.stack import make_caller

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
