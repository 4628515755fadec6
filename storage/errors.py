"""Errors raised by every storage backend.

    StorageError                 the database failed or is unreachable
     ├── StorageUnavailable      cannot reach the database right now (retry later)
     ├── NotFound
     │    ├── ArticleNotFound(id)
     │    ├── TopicNotFound(slug)
     │    ├── SubscriptionNotFound(id)
     │    └── DeliveryNotFound(id)
     └── Conflict
          ├── ArticleExists(id)
          ├── ArticleAlreadyPublished(id)    a published article given a future date
          ├── TokenExists(name)              a live token has the name
          ├── TokenNameKeepsRole(name, role) the name's last token had another role
          └── TokenAlreadyRevoked(name)      the name's tokens are all revoked

Backends raise these from inside ``wrap_exceptions()``; anything that is not a
driver error (a bug) passes through unchanged.
"""

from __future__ import annotations

from datetime import datetime

from syndicate.core.errors import SyndicateError


class StorageError(SyndicateError):
    """The storage failed; the message says how."""

    default_message = "storage error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class StorageUnavailable(StorageError):
    default_message = "the database is unavailable"


class NotFound(StorageError):
    default_message = "not found"


class Conflict(StorageError):
    default_message = "conflict"


class ArticleNotFound(NotFound):
    def __init__(self, article_id: str) -> None:
        self.article_id = article_id
        super().__init__(f"no article with id {article_id!r}")


class TopicNotFound(NotFound):
    def __init__(self, slug: str) -> None:
        self.slug = slug
        super().__init__(f"no topic {slug!r}")


class SubscriptionNotFound(NotFound):
    def __init__(self, subscription_id: str) -> None:
        self.subscription_id = subscription_id
        super().__init__(f"no subscription {subscription_id!r}")


class DeliveryNotFound(NotFound):
    def __init__(self, delivery_id: int) -> None:
        self.delivery_id = delivery_id
        super().__init__(f"no delivery {delivery_id!r}")


class ArticleExists(Conflict):
    def __init__(self, article_id: str) -> None:
        self.article_id = article_id
        super().__init__(f"an article with id {article_id!r} already exists")


class ArticleAlreadyPublished(Conflict):
    """A write that would move a published article's ``published_at`` into the future:
    readers and partners have seen it, so it cannot be scheduled again."""

    def __init__(self, article_id: str) -> None:
        self.article_id = article_id
        super().__init__(
            f"article {article_id!r} is already published; its published_at cannot be "
            "moved into the future (it cannot be rescheduled)"
        )


class TokenExists(Conflict):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"a token named {name!r} already exists")


class TokenNameKeepsRole(Conflict):
    """A token under a revoked token's name with another role: the name owns its
    subscriptions (``subscriptions.owner``), so a partner given an operator's old name
    (or the reverse) would take them over. ``role``: the name's last token's role."""

    def __init__(self, name: str, role: str) -> None:
        self.name = name
        self.role = role
        article = "an" if role[:1] in "aeiou" else "a"
        super().__init__(
            f"the name {name!r} belonged to {article} {role} token; a reused name keeps "
            "its role (the name owns that token's subscriptions): choose another name"
        )


class TokenAlreadyRevoked(Conflict):
    """Revoking a name whose tokens are all revoked already (``revoked_at``: the
    latest one's revocation)."""

    def __init__(self, name: str, revoked_at: datetime | None = None) -> None:
        self.name = name
        self.revoked_at = revoked_at
        super().__init__(f"the token named {name!r} is already revoked")
