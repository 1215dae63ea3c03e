"""The names of the log formats a source can declare (``docs/log-formats.md``)."""

from __future__ import annotations

CLOUDFRONT = "cloudfront"


CLOUDFLARE = "cloudflare"


EDGELEDGER = "edgeledger"


FORMATS = (CLOUDFRONT, CLOUDFLARE, EDGELEDGER)
