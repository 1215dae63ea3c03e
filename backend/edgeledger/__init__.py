"""EdgeLedger: content rights and settlement for content delivery networks."""

__version__ = "0.1.0"
