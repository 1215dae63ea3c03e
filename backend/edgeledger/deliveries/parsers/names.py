"""The names of the log formats a source can declare (``docs/log-formats.md``)."""

from __future__ import annotations

CLOUDFRONT = "cloudfront"


CLOUDFLARE = "cloudflare"


EDGELEDGER = "edgeledger"


NGINX_COMBINED = "nginx_combined"


ALIYUN = "aliyun"


FORMATS = (CLOUDFRONT, CLOUDFLARE, EDGELEDGER, NGINX_COMBINED, ALIYUN)
