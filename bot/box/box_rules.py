"""What Box takes when it creates a box: machine types, setup scripts, environments and env.

From REFERENCE.md §7 (`POST /boxes`) and §9 (environments); both the repository's config and
the operator's settings are checked against these before Box sees them.
"""

from __future__ import annotations

import re

MACHINE_CHOICES = ("small", "default", "large")
MAX_SETUP_BYTES = 64 * 1024
MAX_ENV_VARS = 100
MAX_ENV_BYTES = 64 * 1024
MAX_ENVIRONMENT_CHARS = 64
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ENVIRONMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")
# Names Box keeps for itself in a box's environment; setting one is `invalid_env`.
RESERVED_ENV_NAMES = frozenset(
    {
        "ASCII_TOKEN",
        "ASCII_API_URL",
        "AGENT_ID",
        "PRODUCT_MODE",
        "ENVIRONMENT_ID",
        "BOX_ID",
        "SERVICE_PREVIEW_TOKEN",
        "BOX_CLI_TOKEN",
    }
)


def environment_name_ok(name: str) -> bool:
    """Return whether *name* follows Box's rule for environment names."""
    return len(name) <= MAX_ENVIRONMENT_CHARS and ENVIRONMENT_RE.match(name) is not None
