"""Text from GitHub made plain: one kind of line end, and no invisible characters."""

from __future__ import annotations

import re
import unicodedata

# Characters that show as nothing or as blank space yet are not format or control
# characters: Unicode's Default_Ignorable_Code_Point set (DerivedCoreProperties.txt), which
# holds the Hangul fillers, the combining grapheme joiner, variation selectors (they can
# carry hidden bytes after a visible character) and the tag block, plus the braille blank.
INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def normalize(text: str) -> str:
    """Normalise line ends and drop invisible characters: format, control, ignorable, blank."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = INVISIBLE.sub("", text)
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cf", "Cc"))
