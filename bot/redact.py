"""Remove secrets from text before it reaches a log line or a public comment.

Covers what this app handles: Box API keys, GitHub tokens (the 40-character
and the newer ~520-character `ghs_` forms), JWTs, PEM private keys, bearer
headers, and the access tokens that Box desktop, VNC and hosted-port URLs
carry in their query string (`token=`, `_token=`).
"""

from __future__ import annotations

import re

MASK = "[redacted]"

_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"\bgh[opsur]_[A-Za-z0-9._-]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bbox_[A-Za-z0-9]+_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bwhsec_[0-9a-f]{16,}"),
)
# Query values that grant access: `?token=…`, `&_token=…`, `access_token=…`, `password=…`.
_SECRET_QUERY = re.compile(r"(?i)([?&#](?:_token|token|access_token|password|pwd)=)[^&#\s\"'<>)]+")


def redact(text: str) -> str:
    """Return *text* with every known kind of secret replaced by a mask."""
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, text)


def strip_token_query(url: str) -> str:
    """Drop `_token`/`token` query parameters from a URL (for preview links posted publicly)."""
    stripped = re.sub(r"(?i)([?&])(?:_token|token)=[^&#\s]*&?", r"\1", url)
    return stripped.rstrip("?&")
