"""The chain as the server and the developer tools reach it.

* ``client``        ChainClient: reads, batched reads, signed sends with one nonce per signer (lock file),
                    decoded custom errors, receipts; re-sends at a nonce handed out before
* ``fees``          EIP-1559 bids: the market's, a replacement's, the ceiling (TX_MAX_FEE_PER_GAS_WEI)
* ``stuck_tx``      one transaction per nonce, recorded before it leaves, sent again bidding more once
                    stuck (settlement posts, anchors, relayed registrations and catalogues);
                    database-free: the caller's row and its commit
* ``anvil``         a local anvil process (the stack, the tests, the benchmarks)
* ``deploy``        runs scripts/deploy.py (brownie) against any RPC endpoint
* ``brownie_run``   brownie's command line from a checkout whose path holds a dot
* ``brownie_receipts``  brownie waits for an anvil receipt before it calls a transaction dropped
"""
