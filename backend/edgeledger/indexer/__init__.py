"""Chain indexer: follows the events of ContentRegistry, DeliveryLedger and SettlementVault into the
database with a block cursor, survives restarts and reorgs, and rebuilds from the chain and IPFS alone.

* ``models.py``   cursor, recent block hashes, raw events, projections (assets, sources, batches,
                  settlements) and the API schema;
* ``service.py``  decoding logs with the build artifacts' ABIs; the projection as a pure function of the
                  canonical event sequence;
* ``flows.py``    one indexing step (reorg check, bounded log ranges), follow, rebuild;
* ``tasks.py``    the Celery beat task; ``views.py`` ``GET /chain/status``.
"""
