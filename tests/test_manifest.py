"""app.yml asks GitHub for exactly the events the handlers listen to."""

from __future__ import annotations

from pathlib import Path

import yaml

from handlers import build_router

APP_YML = Path(__file__).parent.parent / "app.yml"
# Sent to every GitHub App whatever it subscribes to; a manifest cannot name them.
ALWAYS_SENT = {"installation", "installation_repositories"}


def test_manifest_events_are_the_events_handled() -> None:
    manifest = yaml.safe_load(APP_YML.read_text(encoding="utf-8"))
    handled = {event for event, _action in build_router().routes}
    assert set(manifest["default_events"]) == handled - ALWAYS_SENT


def test_every_manifest_entry_says_why() -> None:
    lines = APP_YML.read_text(encoding="utf-8").splitlines()
    for section in ("default_events:", "default_permissions:"):
        start = lines.index(section)
        entries = []
        for number in range(start + 1, len(lines)):
            line = lines[number]
            if line and not line.startswith(" "):
                break
            if line.strip() and not line.strip().startswith("#"):
                entries.append(number)
        for number in entries:
            above = lines[number - 1].strip()
            # An entry is commented directly, or shares the comment of the entry above it.
            assert above.startswith("#") or number - 1 in entries, lines[number]
