"""Fast JSON decoding shared by webhook intake and the store."""

from __future__ import annotations

import json
from typing import Any

import orjson


def decode_json(body: bytes) -> Any:
    """Decode JSON text; raise `ValueError` when it is not JSON.

    orjson reads a delivery about three times faster than the standard library, and
    decoding is most of the cost of taking one in. It refuses a few things the standard
    library reads (lone surrogate escapes, NaN), so those get a second chance there.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)
