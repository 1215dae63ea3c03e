"""Developer tools: the local stack (``edgeledger up``), its scripted demo, and the sample data the demo,
the benchmarks and the tests share. Nothing here runs in production.

* ``stack``    anvil, IPFS, database, NATS JetStream, workers and API on embedded defaults; deploys once;
               waits for Ctrl-C
* ``nats_server``  a private nats-server with JetStream (the stack's ingest queue; the tests' too)
* ``demo``     the scripted demo ``edgeledger up`` runs against the local stack (imports ``stack``; the
               stack takes the demo as a callable, so neither imports the other back)
* ``catalogue``  the demo's catalogue of product images registered in one transaction
* ``samples``  demo PNGs and CloudFront logs
* ``wallet``   sign, send and wait for the receipt of a transaction from a key at hand (demo and tests)
* ``rpc_proxy``  a JSON-RPC endpoint in front of a node that refuses, delays or answers late as providers
               and racing nodes do (tests and benchmarks)
"""
