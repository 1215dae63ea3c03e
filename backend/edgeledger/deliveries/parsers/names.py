"""The names of the log formats a source can declare (``docs/log-formats.md``), and which of them need the
source to declare what their lines do not say."""

from __future__ import annotations

CLOUDFRONT = "cloudfront"


CLOUDFLARE = "cloudflare"


EDGELEDGER = "edgeledger"


NGINX_COMBINED = "nginx_combined"


ALIYUN = "aliyun"


TENCENT = "tencent"


FASTLY_COMMON = "fastly_common"


FASTLY_COMBINED = "fastly_combined"


FASTLY_JSON = "fastly_json"


AKAMAI_JSON = "akamai_json"


AKAMAI_STRUCTURED = "akamai_structured"


FORMATS = (
    CLOUDFRONT,
    CLOUDFLARE,
    EDGELEDGER,
    NGINX_COMBINED,
    ALIYUN,
    TENCENT,
    FASTLY_COMMON,
    FASTLY_COMBINED,
    FASTLY_JSON,
    AKAMAI_JSON,
    AKAMAI_STRUCTURED,
)


#: Formats whose lines name no host: the source must declare it (``SiteInfo.host``).
NEEDS_HOST = frozenset((NGINX_COMBINED, FASTLY_COMMON, FASTLY_COMBINED))


#: Formats whose lines name no edge location: the source must declare it (``SiteInfo.edge_location``).
NEEDS_EDGE = frozenset((NGINX_COMBINED, FASTLY_COMMON, FASTLY_COMBINED))


#: Formats whose columns are not self-describing: the source must declare its field ids.
NEEDS_FIELDS = frozenset((AKAMAI_STRUCTURED,))
