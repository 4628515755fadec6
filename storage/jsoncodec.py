"""JSON output with orjson (about ten times faster than ``json.dumps`` for an article).

orjson refuses lone UTF-16 surrogates and non-string keys; those values go to the
``json`` module, which escapes them. Output is compact UTF-8 either way. (Parsing stays
with ``json``: orjson reads integers beyond 64 bits as floats, and parsing is not where
the time goes.)
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON of ``value``."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


def dumps_text(value: Any) -> str:
    return dumps(value).decode()
