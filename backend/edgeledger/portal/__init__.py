"""Auditor portal: server-rendered pages (Jinja2) under /portal for auditors and admins.

* ``service.py``  view models: sources and their manifest chains, batches with fraud flags, settlements
                  (the list, and one settlement's page: totals in its token, challenge window, related
                  settlements), reconciliation cases, assets with lineage, charts; every "verified" badge
                  is a chain read made while the page is rendered, never a copy of the database;
* ``views.py``    the routes (a settlement's HTML statement among them), cookie sessions (an API key
                  exchanged for an HttpOnly, SameSite=Strict session cookie), scope filtering, rate
                  limits, compliance events for record lookups;
* ``templates/``, ``static/``  pages, CSS and ``verify.js`` (the leaf encoding, Merkle path and an
                  ``eth_call`` to the chain, all in the auditor's browser; keccak from js-sha3).
"""
