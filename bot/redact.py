"""Remove secrets from text before it reaches a log line or a public comment.

Covers what this app handles: Box API keys, GitHub tokens (the 40-character
and the newer ~520-character `ghs_` forms), JWTs, PEM private keys, bearer
headers, model-provider keys (OpenAI, Anthropic), AWS, Slack, GitLab and npm credentials,
`Authorization:` header values, Box desktop and VNC URLs (whose token may sit in the query or
in the path), and access tokens in query strings (`token=`, `_token=`, `vnc_token=`…).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable

MASK = "[redacted]"

# Each kind of secret and how it looks; the kind names what `/metrics` counts.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "private_key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    ),
    ("github_token", re.compile(r"\bgh[opsur]_[A-Za-z0-9._-]{20,}")),
    ("github_token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}")),
    # Box API keys: `box_live_…`/`box_test_…`, another `box_<lane>_…` with a digit in it, or
    # one long run (`box_abcdefghij0123456789`). Error codes such as `box_not_archived` stay.
    ("box_key", re.compile(r"\bbox_(?:live|test)_[A-Za-z0-9_-]{8,}")),
    ("box_key", re.compile(r"\bbox_[A-Za-z0-9]+_(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{8,}")),
    ("box_key", re.compile(r"\bbox_[A-Za-z0-9]{16,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
    # Model providers: Anthropic (`sk-ant-…`), OpenAI (`sk-…`, `sk-proj-…`, `sk-svcacct-…`).
    ("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}")),
    ("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b")),
    ("slack_token", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),
    ("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ("bearer", re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}")),
    ("webhook_secret", re.compile(r"\bwhsec_[0-9a-f]{16,}")),
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
    r"|\"[A-Za-z0-9_]*(?:token|secret|password|apikey|api_key|authorization)\"\s*:\s*)"
    r"\"(?:[^\"\\]|\\.)*\""
)
# Secrets written as `name=value` or `name: value`: AWS secret keys, `Authorization:` headers.
_SECRET_ASSIGNMENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "aws_secret_key",
        re.compile(
            r"(?i)(\baws_secret_access_key[\"']?(?:\s*[=:]\s*|\s+)[\"']?)[A-Za-z0-9/+=]{16,}"
        ),
    ),
    (
        "authorization_header",
        re.compile(r"(?i)(\bauthorization:[ \t]*(?:[a-z]+[ \t]+)?)[^\s\"',}]+"),
    ),
)
# Query values that grant access: `?token=…`, `&_token=…`, `vnc_token=…`, `password=…`.
_SECRET_QUERY = re.compile(
    r"(?i)([?&#;](?:[a-z0-9_.-]*token|password|pwd|secret|signature|sig)=)[^&#\s\"'<>)]+"
)
_TOKEN_QUERY = re.compile(r"(?i)([?&])[a-z0-9_.-]*token=[^&#\s]*&?")

_masked: collections.Counter[str] = collections.Counter()


def redact(text: str) -> str:
    """Return *text* with every known kind of secret replaced by a mask."""
    text = _mask("secret_json", _SECRET_JSON_VALUE, text, lambda m: m.group(1) + f'"{MASK}"')
    text = _mask("desktop_url", _DESKTOP_URL, text, MASK)
    for kind, pattern in _PATTERNS:
        text = _mask(kind, pattern, text, MASK)
    for kind, pattern in _SECRET_ASSIGNMENTS:
        text = _mask(kind, pattern, text, lambda m: m.group(1) + MASK)
    return _mask("secret_query", _SECRET_QUERY, text, lambda m: m.group(1) + MASK)


def _mask(
    kind: str,
    pattern: re.Pattern[str],
    text: str,
    replacement: str | Callable[[re.Match[str]], str],
) -> str:
    masked, count = pattern.subn(replacement, text)
    if count and masked != text:
        _masked[kind] += count
    return masked


def masked_counts() -> dict[str, int]:
    """How many secrets of each kind were masked since the process started."""
    return dict(_masked)


def strip_token_query(url: str) -> str:
    """Drop `token`-like query parameters from a URL (for preview links posted publicly)."""
    return _TOKEN_QUERY.sub(r"\1", url).rstrip("?&")
