"""Deliveries: CDN and edge-node log ingestion, Merkle anchoring, per-line proofs.

* ``parsers/``     log formats -> records and quarantined lines (docs/log-formats.md); ``records.py``
                   their types;
* ``limits.py``    upload limits: bytes, compression ratio, lines, line length (docs/ingestion.md);
* ``ingest.py``    one upload into records, leaves and quarantined lines, chunk by chunk; ``uploads.py`` the
                   HTTP side (streamed bodies, listings); ``regions.py`` pricing regions;
                   ``asset_match.py`` which registered asset a request's host and path name;
* ``pgcopy.py``    PostgreSQL's COPY text format for ingest's bulk loads;
* ``ingest_queue.py``   queued ingestion (INGEST_MODE=queue): uploads stored and enqueued on NATS
                   JetStream, partitioned by source, run by ``edgeledger ingest-worker`` processes;
* ``batches.py``, ``anchoring.py``, ``sources.py``, ``trees.py``, ``signals.py``, ``tasks.py``   closing,
                   signing and anchoring batches, sources on chain, trees on disk, fraud signals, jobs;
* ``receipts.py``, ``proofs.py``, ``hosts.py``   settlement inputs, inclusion proofs, merchant hosts;
* ``models.py``, ``service.py``, ``views.py``   tables and schemas, shared helpers, the /deliveries API;
* ``cli.py``       the ``edgeledger deliveries proof|export`` commands (through the API).
"""
