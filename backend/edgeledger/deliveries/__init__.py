"""Deliveries: CDN and edge-node log ingestion, Merkle anchoring, per-line proofs; `cli` is the
`edgeledger deliveries proof|export` command family (through the API)."""
