"""Pure feed rendering: article records in, RSS / Atom / JSON Feed bytes out.

No I/O and no clock: every value comes from the arguments, so the same data
always renders the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._json import render_json
from ._xml import render_atom, render_rss
from .model import (
    CONTENT_TYPES,
    FORMATS,
    MEDIA_TYPES,
    Category,
    FeedFormat,
    FeedInfo,
    FeedItem,
    Tombstone,
)

__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "MEDIA_TYPES",
    "Category",
    "FeedFormat",
    "FeedInfo",
    "FeedItem",
    "Tombstone",
    "render",
    "render_atom",
    "render_json",
    "render_rss",
]

_RENDERERS = {"rss": render_rss, "atom": render_atom, "json": render_json}


def render(fmt: FeedFormat, info: FeedInfo, items: Sequence[FeedItem]) -> bytes:
    """The feed in ``fmt`` ("rss", "atom" or "json") as UTF-8 bytes."""
    return _RENDERERS[fmt](info, items)
