"""Audit: packages an auditor takes away and checks with only the archive and an RPC URL.

* ``packages.py``       builds the archive for a period and a merchant or a source (docs/audit-package.md);
* ``archive_verify.py`` the standalone verifier (no database, API, settings or build artifacts):
                        ``edgeledger audit verify`` and the ``edgeledger-verify-package`` command;
* ``package_views.py``  ``POST /audit/packages`` (auditors within their scope, admins; rate-limited; every
                        package is an ``export`` event of the compliance log).
"""
