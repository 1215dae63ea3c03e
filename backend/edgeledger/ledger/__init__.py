"""The ledger core: every on-chain format, in one place that imports no database, web or worker code.

Every domain and every chain-only verifier builds on these modules, so a leaf, an id or a manifest has
exactly one definition (docs/delivery-leaf.md, docs/settlement-leaf.md, docs/compliance.md):

* ``hashing``          Keccak-256 (the fastest implementation available), bytes32 hex helpers, FormatError
* ``ids``              derived ids: source, batch, merchant, request key, client commitment
* ``delivery_leaf``    the delivery record leaf (11 static words), its JSON form
* ``merkle``           OpenZeppelin ``StandardMerkleTree``-compatible trees, proofs, multiproofs, dumps
* ``manifest``         the EIP-712 batch manifest: type, fields, struct hash, domain, digest, signing
* ``compliance_leaf``  the compliance event leaf
* ``registration``     the registry's EIP-712 messages (registration, licence and split updates), the
                       commit-reveal commitment, the on-chain codes of the IPFS import profiles
* ``payout_leaf``      the settlement payout leaf and a settlement's payout tree
* ``vault``            the vault's settlement statuses and the layout of supplementary ids
* ``splits``           an asset's split as the registry commits to it (hash) and reading it back from the
                       ``SplitUpdated`` event in the block the registry names, checked against the hash
* ``log_ranges``       ``eth_getLogs`` over any block range in pieces a capped provider accepts (halved
                       when refused), each log once, in (block, log index) order
* ``rpc``              the ``Web3`` every reader connects with (the chain id asked once, not per call)
* ``abis``             the contracts' ABIs, generated from the compiled contracts (package data)
"""
