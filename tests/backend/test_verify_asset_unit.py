"""The "content CID" check of ``edgeledger verify asset`` (pure: the verdict and the file's CIDs given).

The registry records the import profile (``importProfileOf``): the file's CID under that profile must be
the on-chain CID. A registry of the earlier layout records none: either profile's CID may match.
"""

from __future__ import annotations

from typing import Any

from edgeledger.verify.asset import check_content_cid
from edgeledger.verify.result import Report

CIDS = {"legacy-cidv1": "bafy-legacy", "unixfs-v1-2025": "bafk-2025"}


def _check(on_chain: str, profile: str | None, cids: dict[str, str] = CIDS) -> tuple[Any, dict[str, Any]]:
    report = Report()
    verdict: dict[str, Any] = {"content_cid": on_chain, "import_profile": profile}
    check_content_cid(report, verdict, cids)
    (check,) = report.checks
    return check, verdict


def test_the_cid_under_the_recorded_profile_passes() -> None:
    check, verdict = _check("bafk-2025", "unixfs-v1-2025")
    assert check.ok and check.detail == "bafk-2025 (import profile unixfs-v1-2025, as registered)"
    assert verdict["import_profile"] == "unixfs-v1-2025"


def test_a_match_under_another_profile_than_the_recorded_one_fails_and_says_so() -> None:
    check, _ = _check("bafy-legacy", "unixfs-v1-2025")
    assert not check.ok
    assert check.detail == (
        "the chain records bafy-legacy, cut as unixfs-v1-2025; the file's CID under unixfs-v1-2025 is "
        "bafk-2025; under legacy-cidv1 it is: the registration names the wrong profile"
    )
    other, _ = _check("bafy-other", "legacy-cidv1")
    assert not other.ok and other.detail.endswith("under legacy-cidv1 is bafy-legacy")


def test_the_recorded_profile_not_computed_fails() -> None:
    check, _ = _check("bafk-2025", "unixfs-v1-2025", {"legacy-cidv1": "bafy-legacy"})
    assert not check.ok
    assert "computed under legacy-cidv1 only" in check.detail


def test_a_registry_without_profiles_accepts_either_and_names_it() -> None:
    check, verdict = _check("bafk-2025", None)
    assert check.ok and check.detail == "bafk-2025 (import profile unixfs-v1-2025; not recorded on chain)"
    assert verdict["import_profile"] == "unixfs-v1-2025"
    missing, verdict = _check("bafy-other", None)
    assert not missing.ok and verdict["import_profile"] is None
    assert (
        missing.detail
        == "the chain records bafy-other; legacy-cidv1 gives bafy-legacy, unixfs-v1-2025 gives bafk-2025"
    )
