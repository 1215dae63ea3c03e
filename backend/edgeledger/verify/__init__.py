"""The chain-only verifiers: what an auditor runs with a file, a document or an archive and an RPC URL,
trusting neither our API nor our database. All of them build on ``edgeledger.ledger`` (the on-chain
formats and packaged ABIs) and share one result type and exit-code convention (``result``):

* ``result``      Check, Report, UnusableInput (exit 2), Unreachable (exit 3)
* ``rpc``         JSON-RPC reads of the three contracts with the packaged ABIs; deployment files
* ``asset``       a file or sha-256 against the ContentRegistry
* ``delivery``    delivery proofs and batch exports against the DeliveryLedger (manifests, signatures)
* ``stream``      reading a batch export in bounded memory (packed tree nodes, values read one at a time)
* ``settlement``  a settlement's published inputs recomputed and compared with the SettlementVault
* ``event``       a compliance event's leaf and proof against the DeliveryLedger
* ``package``     an audit package: its index, and each item with the verifiers above
* ``cli``         ``edgeledger verify asset|delivery|settlement|event|package``
"""
