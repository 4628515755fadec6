"""The names every layer shares, defined once: event types, subscription kinds and
states, delivery states, the topic slug, and the two spellings of "every topic".

Storage stores them, content validates them, delivery matches on them and the web
layer documents them; each imports them from here (the bottom layer, so storage can).
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

EventType = Literal["article.published", "article.updated", "article.deleted"]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)

SubscriptionKind = Literal["webhook", "websub"]
SubscriptionStatus = Literal["active", "pending", "disabled"]

DeliveryStatus = Literal["pending", "delivered", "failed", "dead"]
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = get_args(DeliveryStatus)

#: A topic slug: lower-case letters, digits and '-', up to 64, starting with a
#: letter or digit. ``TOPIC_SLUG_PATTERN`` is the anchored form JSON Schema uses.
TOPIC_SLUG: Final = r"[a-z0-9][a-z0-9-]{0,63}"
TOPIC_SLUG_PATTERN: Final = rf"^{TOPIC_SLUG}$"
TOPIC_SLUG_RE: Final = re.compile(TOPIC_SLUG)

#: In a webhook subscription's topic filter: every topic, present and future. Not a
#: slug (no slug can be "*"), so it never names a topic.
EVERY_TOPIC: Final = "*"
#: The slug of the collection of every article: /feeds/all.rss, the WebSub topic of
#: that feed, the OPML entry. A URL name, so it is reserved: no topic may be called it.
ALL_TOPICS_SLUG: Final = "all"

#: A new token's name: it names the partner in subscriptions, logs and ``token list``,
#: so no spaces, line breaks or control characters, and a length a table can show.
TOKEN_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
TOKEN_NAME_RULE: Final = (
    "use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
)

#: A subscription's topic: a slug or ``EVERY_TOPIC``.
SUBSCRIPTION_TOPIC_PATTERN: Final = rf"^({re.escape(EVERY_TOPIC)}|{TOPIC_SLUG})$"


def valid_topic(value: str) -> bool:
    """Is ``value`` a topic slug? (The whole text: a trailing newline is no slug.)"""
    return TOPIC_SLUG_RE.fullmatch(value) is not None


#: The site setting (``Storage.site_setting``) holding the public base URL that every
#: process of one database mints GUIDs and links with.
SITE_BASE_URL: Final = "base_url"
