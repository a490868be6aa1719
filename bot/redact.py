"""Remove secrets from text before it reaches a log line or a public comment.

Covers what this app handles: Box API keys, GitHub tokens (the 40-character
and the newer ~520-character `ghs_` forms), JWTs, PEM private keys, bearer
headers, Box desktop and VNC URLs (whose token may sit in the query or in the
path), and access tokens in query strings (`token=`, `_token=`, `vnc_token=`…).
"""

from __future__ import annotations

import re

MASK = "[redacted]"

_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"\bgh[opsur]_[A-Za-z0-9._-]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    # Box API keys: `box_live_…`/`box_test_…`, another `box_<lane>_…` with a digit in it, or
    # one long run (`box_abcdefghij0123456789`). Error codes such as `box_not_archived` stay.
    re.compile(r"\bbox_(?:live|test)_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bbox_[A-Za-z0-9]+_(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bbox_[A-Za-z0-9]{16,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bwhsec_[0-9a-f]{16,}"),
)
# A whole desktop or VNC stream URL: its host names the desktop, or its path the stream page.
_DESKTOP_URL = re.compile(
    r"(?i)\b(?:https?|wss?)://"
    r"(?:[^\s/\"'<>]*desktop[^\s/\"'<>]*(?:/[^\s\"'<>]*)?"
    r"|[^\s/\"'<>]+/[^\s\"'<>]*(?:vnc(?:_lite)?\.html|websockify|stream\.html)[^\s\"'<>]*)"
)
# A JSON string value under a key that names a desktop/VNC link or a secret.
_SECRET_JSON_VALUE = re.compile(
    r"(?i)(\"[A-Za-z0-9_]*(?:desktop|vnc)[A-Za-z0-9_]*url\"\s*:\s*"
    r"|\"[A-Za-z0-9_]*(?:token|secret|password|apikey|api_key)\"\s*:\s*)\"(?:[^\"\\]|\\.)*\""
)
# Query values that grant access: `?token=…`, `&_token=…`, `vnc_token=…`, `password=…`.
_SECRET_QUERY = re.compile(
    r"(?i)([?&#;](?:[a-z0-9_.-]*token|password|pwd|secret|signature|sig)=)[^&#\s\"'<>)]+"
)
_TOKEN_QUERY = re.compile(r"(?i)([?&])[a-z0-9_.-]*token=[^&#\s]*&?")


def redact(text: str) -> str:
    """Return *text* with every known kind of secret replaced by a mask."""
    text = _SECRET_JSON_VALUE.sub(lambda m: m.group(1) + f'"{MASK}"', text)
    text = _DESKTOP_URL.sub(MASK, text)
    for pattern in _PATTERNS:
        text = pattern.sub(MASK, text)
    return _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, text)


def strip_token_query(url: str) -> str:
    """Drop `token`-like query parameters from a URL (for preview links posted publicly)."""
    return _TOKEN_QUERY.sub(r"\1", url).rstrip("?&")
