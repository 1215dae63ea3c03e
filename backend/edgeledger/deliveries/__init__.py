"""Deliveries: CDN and edge-node log ingestion, Merkle anchoring, per-line proofs."""
