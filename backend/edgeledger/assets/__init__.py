"""Assets: upload, registration and provenance of content (docs/architecture.md, docs/registration.md).

* ``models.py``    the asset table, the registration journal, request and read models;
* ``service.py``   digests, metadata documents, the registration tuple, chain reads;
* ``flows.py``     registration end to end: journal and spool, the creator's signature, registerFor,
                   the asset row, IPFS pins, the reconciler;
* ``updates.py``   gas-free licence and split updates relayed with the holder's signature;
* ``views.py``     the /assets API; ``tasks.py`` the reconciler's job.
"""
