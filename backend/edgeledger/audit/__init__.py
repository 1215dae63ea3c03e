"""Audit: packages an auditor takes away and checks with only the archive and an RPC URL.

* ``packages.py``       builds the archive for a period and a merchant or a source (docs/audit-package.md);
* the standalone verifier lives with the other chain-only verifiers (``edgeledger.verify.package``:
                        ``edgeledger verify package``, ``edgeledger-verify-package``);
* ``package_views.py``  ``POST /audit/packages`` (auditors within their scope, admins; rate-limited; every
                        package is an ``export`` event of the compliance log).
"""
