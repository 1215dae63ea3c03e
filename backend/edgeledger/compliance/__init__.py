"""Compliance: an anchored log of every access to personal or raw log data, erasure, residency, retention.

* ``leaf.py``     the event leaf encoding (docs/compliance.md), DB-free, shared with the verifier;
* ``models.py``   the event log, the residency policy table, request/response schemas;
* ``service.py``  recording events (who, what, when, legal basis), data zones and the residency check,
                  erasure of a data subject, retention purges, raw-data exports;
* ``flows.py``    batching events into the compliance source's batches, which the deliveries pipeline
                  signs and anchors like any other batch; one pass of the compliance job;
* ``tasks.py``    the Celery beat task; ``views.py`` the /compliance API.
"""
