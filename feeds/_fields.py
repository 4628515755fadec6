"""Values every format derives the same way from an article: its last change,
its image's media type, the language a page of items shares, text for RSS."""

from __future__ import annotations

import html
import mimetypes
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from .model import FeedItem

#: The media type of an image whose URL names none we know (readers only need "image/").
DEFAULT_IMAGE_TYPE = "image/jpeg"

# Python's built-in table only (not the machine's /etc/mime.types), so every machine
# renders the same bytes; .webp is missing from it before Python 3.13.
_TYPES = mimetypes.MimeTypes()
_TYPES.add_type("image/webp", ".webp")

# What readers take for HTML in a text element: a closing tag or a character
# reference (feedparser's test, and the W3C validator's).
_LOOKS_LIKE_HTML = re.compile(r"</\w+>|&#?\w+;")


def image_type(url: str) -> str:
    """The media type of an image, from its URL's extension."""
    guessed, _ = _TYPES.guess_type(urlsplit(url).path, strict=False)
    if guessed is None or not guessed.startswith("image/"):
        return DEFAULT_IMAGE_TYPE
    return guessed


def shared_language(items: Sequence[FeedItem]) -> str | None:
    """The language of every item, when they all have the same one."""
    languages = {item.article.language for item in items}
    if len(languages) != 1:
        return None
    return languages.pop()


def rss_text(text: str) -> str:
    """Plain text for an RSS element readers may read as HTML (``title``): as it is,
    unless it looks like HTML, then escaped for HTML, so that a reader that guesses
    (feedparser, and most) shows the text itself, tags and references included.
    Text that does not look like HTML stays plain, as the RSS Best Practices Profile
    and the W3C validator want it."""
    if _LOOKS_LIKE_HTML.search(text) is None:
        return text
    return html.escape(text, quote=False)
