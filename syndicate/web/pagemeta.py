"""What a page says about itself to browsers, search engines and link previews:
its language and text direction, OpenGraph locales, dates, and JSON-LD.

Pure functions of stored records (no I/O), used by the page templates.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from storage.records import Article

#: The language of the site's own words (navigation, headings, error pages), and of
#: an article that does not say which language it is in.
SITE_LANGUAGE = "en"

#: Primary language subtags written right to left when no script subtag says
#: otherwise (BCP 47 / CLDR likely scripts: Arabic, Hebrew, Thaana, Syriac, N'Ko...).
RTL_LANGUAGES = frozenset(
    "ar arc ckb dv fa glk he iw ji ks lrc mzn nqo pnb ps sd syr ug ur yi".split()
)
#: Script subtags (ISO 15924) written right to left: ``ku-Arab``, ``pa-Arab``, ``az-Arab``.
RTL_SCRIPTS = frozenset("adlm arab hebr mand mend nkoo rohg samr syrc thaa yezi".split())

#: JSON-LD sits in a ``<script>`` element: these may never appear in it raw
#: (``</script>`` would end it, ``<!--`` change how it is parsed).
_SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


def language_of(article: Article) -> str:
    """The article's language tag, or the site's when it has none."""
    return article.language or SITE_LANGUAGE


def direction(language: str) -> str:
    """``rtl`` or ``ltr`` for a BCP 47 tag: its script subtag decides when it has one
    (``ku-Arab`` is right to left, ``sd-Deva`` left to right), else its primary subtag."""
    subtags = _leading(language.lower())
    for subtag in subtags[1:]:
        if len(subtag) == 4 and subtag.isalpha():
            return "rtl" if subtag in RTL_SCRIPTS else "ltr"
    return "rtl" if subtags[0] in RTL_LANGUAGES else "ltr"


def _leading(language: str) -> list[str]:
    """The subtags before any extension or private use (a one-letter singleton):
    ``latn`` in ``ar-u-nu-latn`` (Arabic with Latin digits) is no script subtag."""
    subtags = language.split("-")
    for n, subtag in enumerate(subtags[1:], start=1):
        if len(subtag) == 1:
            return subtags[:n]
    return subtags


def lang_attributes(language: str, *, within: str | None) -> dict[str, str]:
    """``lang`` and ``dir`` for an element in ``language`` inside one in ``within``:
    nothing when they are the same language, ``dir`` only when it changes."""
    if within is not None and language.lower() == within.lower():
        return {}
    attributes = {"lang": language}
    if within is None or direction(language) != direction(within):
        attributes["dir"] = direction(language)
    return attributes


def og_locale(language: str) -> str:
    """OpenGraph's ``language_TERRITORY`` form: ``he-IL`` -> ``he_IL``; a tag with no
    region gives its language alone (``ar``)."""
    subtags = _leading(language)
    regions = [s for s in subtags[1:] if len(s) == 2 or (len(s) == 3 and s.isdigit())]
    locale = subtags[0].lower()
    return f"{locale}_{regions[0].upper()}" if regions else locale


def iso_time(value: datetime) -> str:
    """RFC 3339 in UTC to the second, as OpenGraph, JSON-LD and sitemaps take it."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def article_json_ld(
    article: Article,
    *,
    canonical: str,
    home: str,
    site_name: str,
    description: str,
    sections: list[str],
) -> dict[str, Any]:
    """schema.org ``Article``: what search engines show of the page."""
    publisher = {"@type": "Organization", "name": site_name, "url": home}
    author: dict[str, Any] = (
        {"@type": "Person", "name": article.author} if article.author else publisher
    )
    data: dict[str, Any] = {
        "@context": "https://schema.org",
        "@type": "Article",
        "headline": article.title,
        "url": canonical,
        "mainEntityOfPage": {"@type": "WebPage", "@id": canonical},
        "datePublished": iso_time(article.published_at),
        "dateModified": iso_time(article.modified_at),
        "author": author,
        "publisher": publisher,
        "inLanguage": language_of(article),
        "articleSection": sections,
    }
    if description:
        data["description"] = description
    if article.image:
        data["image"] = [article.image]
    return data


def script_json(data: Any) -> str:
    """JSON to put inside a ``<script>`` element as it is: nothing in any field can
    end the element, since ``<``, ``>`` and ``&`` are written as ``\\u`` escapes."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).translate(_SCRIPT_ESCAPES)
