"""A correction is priced at its period's terms block, end-to-end on a real chain and database: what the
merchant's statement says of a late record of content registered after that block, and the block a
period records when it billed nothing because every batch waited for a fraud review.

The money world and its helpers: tests/backend/support/money.py, test_settlement_money.py.
"""

from __future__ import annotations

import html

import pytest

from edgeledger.auth.models import Role
from edgeledger.deliveries import signals
from edgeledger.settlement.models import SettlementState
from edgeledger.settlement.statements import context_from_json, merchant_statement_json
from edgeledger.verify.settlement import recompute
from tests.backend.support.money import DELIVERY_FEE, NOW, ROYALTY, Money
from tests.backend.support.stack import make_caller
from tests.backend.test_settlement_money import _correction_of, _flagged_batch, _late_records_of_new_content

pytestmark = pytest.mark.integration


def test_a_receipt_priced_as_unregistered_says_why_on_the_statement(money: Money) -> None:
    """A late record of content registered after the period's terms block is priced as unregistered
    content (delivery fee, no royalty) while its receipt key still names the asset. The merchant's
    statement says so on that receipt, naming the block, in JSON and HTML; the note follows from the
    statement itself, so the audit verifier's recomputation gives the same document."""
    admin = make_caller(money.app, Role.admin, "admin")
    period, correction, new_asset, _ = _late_records_of_new_content(money)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    assert correction.terms_block == period.terms_block is not None

    url = f"/settlement/settlements/{correction.id}/statement"
    answer = money.app.get(url, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["royalties"] == [] and document["receipts"]
    note = (
        "priced as unregistered content (delivery fee only, no royalty): asset "
        f"{new_asset} was registered after this period's terms block {period.terms_block}, so it was not "
        "registered when delivered"
    )
    for key, entry in document["receipts"].items():
        assert f":{new_asset}:" in key and entry["asset_id"] == str(new_asset)
        assert (entry["priced_as"], entry["terms_block"], entry["note"]) == (
            "unregistered",
            period.terms_block,
            note,
        )
    # Recomputed from the published inputs, the statement gives the same document, note included.
    statement = recompute(money.document(correction))[1]
    assert merchant_statement_json(statement, context_from_json(document)) == document

    page = money.app.get(f"{url}?format=html", headers=admin.headers)
    assert page.status_code == 200, page.text
    assert page.text.count("class='receipt priced-unregistered'") == len(document["receipts"])
    assert note in html.unescape(page.text)

    # The period's own receipts earned their royalty: no note there.
    own = money.app.get(f"/settlement/settlements/{period.id}/statement", headers=admin.headers).json()
    assert own["receipts"] and all("priced_as" not in e for e in own["receipts"].values())
    own_page = money.app.get(
        f"/settlement/settlements/{period.id}/statement?format=html", headers=admin.headers
    )
    assert "priced-unregistered" not in own_page.text


def test_a_period_billing_nothing_while_under_review_records_its_terms_block(money: Money) -> None:
    """Every batch of the period waits for a fraud review, so the period bills nothing (``empty``). It
    records its terms block all the same: the correction that bills the batch once the review is decided
    prices it at the period's block, as the period would have, not at the chain's terms of that later
    day (here the asset disputed after the period's block: its royalty is paid, not held back)."""
    flag = _flagged_batch(money, 25)
    money.run(NOW)
    period = money.settlement("a")
    assert period is not None and period.state == SettlementState.empty, period.state
    assert period.terms_block is not None
    money.dispute()  # after the period's block

    signals.review_flag(money.session, flag, signals.FlagReview(decision="dismissed", reason="ok"), 1)
    money.session.commit()
    correction = _correction_of(money, period)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    assert correction.terms_block == period.terms_block
    statement = money.statement(correction)
    assert statement.held_back == () and correction.held_total == 0
    assert correction.total == DELIVERY_FEE + ROYALTY
    checks = money.verify(money.document(correction))
    assert checks and all(checks.values()), checks
