"""Request models (pydantic): they validate input and describe it in /openapi.json.

The response models are in ``content.responses``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from syndicate.content.text import ContentType, clean_text, one_line
from syndicate.content.urls import HTTP_URL_PATTERN, to_uri
from syndicate.core.names import (
    ALL_TOPICS_SLUG,
    EVERY_TOPIC,
    SUBSCRIPTION_TOPIC_PATTERN,
    TOPIC_SLUG_PATTERN,
    EventType,
    valid_topic,
)
from syndicate.core.settings import MAX_TOPICS_PER_ARTICLE

ARTICLE_ID_PATTERN = r"^[A-Za-z0-9._~-]{1,128}$"
#: 1-128 characters a path segment can carry as they are, but "." and "..", which
#: URL resolution takes for "here" and "up" (``/articles/..`` is the home page).
SLUG_PATTERN = (
    r"^(?:[^\s/?#%\\.][^\s/?#%\\]{0,127}|\.[^\s/?#%\\.][^\s/?#%\\]{0,126}"
    r"|\.\.[^\s/?#%\\]{1,126})$"
)
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
RESERVED_TOPICS = frozenset({ALL_TOPICS_SLUG})
MAX_TITLE = 500
MAX_SUMMARY = 5000
MAX_AUTHOR = 200
MAX_URL = 2048

#: At least one character that is neither blank nor a control character (nor U+FEFF,
#: which JSON Schema's \s counts as a space and Python's does not).
VISIBLE_PATTERN = r"[^\s\u0000-\u001f\u007f-\u009f\ufeff]"
#: The same for one-line text, from which bidirectional controls are removed too.
LINE_PATTERN = r"[^\s\u0000-\u001f\u007f-\u009f\ufeff\u202a-\u202e\u2066-\u2069]"
# Patterns documented in the schema but checked by validators with clearer messages.
TopicSlug = Annotated[
    str,
    Field(json_schema_extra={"pattern": TOPIC_SLUG_PATTERN, "not": {"enum": [ALL_TOPICS_SLUG]}}),
]
SubscriptionTopic = Annotated[str, Field(json_schema_extra={"pattern": SUBSCRIPTION_TOPIC_PATTERN})]

_ARTICLE_ID = re.compile(ARTICLE_ID_PATTERN)
_VISIBLE = re.compile(LINE_PATTERN)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _one_line(value: str) -> str:
    """``text.one_line``; text with nothing visible (blank, or only control
    characters) is refused."""
    if not _VISIBLE.search(value):
        raise ValueError("must not be blank")
    return one_line(value)


#: RFC 3339's date-time, as JSON Schema's ``date-time`` format has it (seconds and an
#: offset, ``Z`` or ``+hh:mm``; a date alone or a time without an offset says too
#: little), with a year from 1970 to 2199 as written: a 1900-01-01 is a placeholder, not
#: a date (issue 20), and in these years no offset can carry a time out of the calendar.
TIME_PATTERN = (
    r"^(19[7-9][0-9]|2[01][0-9]{2})-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_TIME = re.compile(TIME_PATTERN)
_RFC3339 = re.compile(TIME_PATTERN.replace("(19[7-9][0-9]|2[01][0-9]{2})", "[0-9]{4}"))


def _date_text(value: Any) -> Any:
    """Times come as RFC 3339 date-time text (never numbers: no epoch guessing), in the
    years ``TIME_PATTERN`` allows."""
    if value is None:
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError(
            "must be an RFC 3339 date-time with seconds and an offset, e.g. 2026-11-20T08:00:00Z"
        )
    if _TIME.fullmatch(value) is None:
        raise ValueError("out of range: a time from the year 1970 to 2199")
    return value


def valid_article_id(value: str) -> bool:
    """The whole text (``fullmatch``: the pattern's ``$`` alone lets a trailing newline by)."""
    return _ARTICLE_ID.fullmatch(value) is not None and value not in (".", "..")


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC (no offset: taken as UTC). A time whose UTC form falls outside
    years 1-9999 (``0001-01-01T00:00:00+14:00``) is a validation error, not a crash."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: in UTC it falls outside years 1-9999") from None


#: A time given as RFC 3339 text (never a number), held in UTC.
UtcTime = Annotated[
    datetime,
    BeforeValidator(_date_text),
    AfterValidator(as_utc),
    Field(json_schema_extra={"pattern": TIME_PATTERN}),
]

#: An absolute http(s) URL: an RFC 3986 URI, or an IRI, held as the URI it stands for
#: (``content.urls``). The schema states the rule whole, as a pattern: no ``format``,
#: which schemathesis holds to more than the pattern says (an IP literal's form, a
#: port's range), so schema-valid text would be refused or invalid text taken.
HttpUrl = Annotated[
    str,
    AfterValidator(to_uri),
    Field(max_length=MAX_URL, json_schema_extra={"pattern": HTTP_URL_PATTERN}),
]


class _Input(BaseModel):
    """Rejects unknown fields; once the input is valid, strips the characters XML
    cannot carry from all its text. Validation sees the text as sent, so the
    limits in the schema (lengths, patterns) are exactly the limits enforced."""

    model_config = ConfigDict(extra="forbid")

    #: Fields cleaned later anyway (article bodies, by the renderer).
    _cleaned_later: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _clean_text(self) -> Self:
        for name, value in self.__dict__.items():
            if isinstance(value, str | list | dict) and name not in self._cleaned_later:
                self.__dict__[name] = _clean(value)
        return self


class ArticleIn(_Input):
    """An article as operators send it (POST, PUT, batch items, import files)."""

    _cleaned_later = frozenset({"content"})  # content.render_content cleans it first

    id: str | None = Field(
        default=None,
        description="External id; generated when absent.",
        pattern=ARTICLE_ID_PATTERN,
    )
    title: str = Field(
        min_length=1, max_length=MAX_TITLE, json_schema_extra={"pattern": LINE_PATTERN}
    )
    content: str = Field(description="The body, interpreted by content_type.")
    content_type: ContentType = "html"
    summary: str | None = Field(default=None, max_length=MAX_SUMMARY)
    topics: list[TopicSlug] = Field(min_length=1, max_length=MAX_TOPICS_PER_ARTICLE)
    author: str | None = Field(default=None, max_length=MAX_AUTHOR)
    url: HttpUrl | None = Field(default=None, description="Canonical URL.")
    image: HttpUrl | None = None
    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    published_at: UtcTime | None = Field(
        default=None,
        description=(
            "RFC 3339 date-time with seconds and an offset, years 1970-2199 as written; "
            "stored in UTC. A future time schedules the article."
        ),
    )
    slug: str | None = Field(
        default=None,
        pattern=SLUG_PATTERN,
        # control characters are cleaned away first: one visible character must stay
        json_schema_extra={"allOf": [{"pattern": VISIBLE_PATTERN}]},
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value in (".", ".."):
            raise ValueError("must not be '.' or '..'")
        return value

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _one_line(value)

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: list[str], info: ValidationInfo) -> list[str]:
        limit = (info.context or {}).get("max_topics", MAX_TOPICS_PER_ARTICLE)
        if len(value) > limit:
            raise ValueError(f"at most {limit} topics per article")
        seen: list[str] = []
        for topic in value:
            if not valid_topic(topic):
                raise ValueError(
                    f"{topic!r} is not a topic slug (lower-case letters, digits and '-', "
                    "up to 64, starting with a letter or digit)"
                )
            if topic in RESERVED_TOPICS:
                raise ValueError(f"{topic!r} is reserved")
            if topic not in seen:
                seen.append(topic)
        return seen

    @field_validator("author", "summary")
    @classmethod
    def _line_or_none(cls, value: str | None) -> str | None:
        """One line (``text.one_line``: a summary is one paragraph wherever it is
        shown); nothing visible is no value."""
        return (one_line(value) or None) if value is not None else None


class BatchIn(BaseModel):
    """``POST /api/articles/batch``: items are validated one by one."""

    model_config = ConfigDict(extra="forbid")
    articles: list[Any] = Field(description="Articles (ArticleIn), validated one by one.")


class TopicIn(_Input):
    title: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra={"pattern": LINE_PATTERN}
    )
    description: str = Field(default="", max_length=MAX_SUMMARY)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        return None if value is None else _one_line(value)


def _subscription_topics(value: list[str]) -> list[str]:
    seen: list[str] = []
    for topic in value:
        if topic != EVERY_TOPIC and not valid_topic(topic):
            raise ValueError(f'{topic!r} is not a topic slug (or "{EVERY_TOPIC}" for every topic)')
        if topic not in seen:
            seen.append(topic)
    # every topic: slugs beside it add nothing
    return [EVERY_TOPIC] if EVERY_TOPIC in seen else seen


class SubscriptionIn(_Input):
    """A partner's webhook subscription."""

    url: HttpUrl = Field(description="Absolute http(s) URL that receives POSTs.")
    topics: list[SubscriptionTopic] = Field(
        min_length=1,
        max_length=100,
        description=f'Topic slugs, or ["{EVERY_TOPIC}"] for every topic.',
    )
    events: list[EventType] | None = Field(
        default=None, description="Event types to receive; all when omitted."
    )
    description: str = Field(default="", max_length=500)

    _check_topics = field_validator("topics")(lambda cls, v: _subscription_topics(v))


class SubscriptionPatch(_Input):
    url: HttpUrl | None = None
    topics: list[SubscriptionTopic] | None = Field(default=None, min_length=1, max_length=100)
    events: list[EventType] | None = None
    description: str | None = Field(default=None, max_length=500)
    status: Literal["active", "disabled"] | None = Field(
        default=None, description="active re-enables a disabled subscription."
    )

    _check_topics = field_validator("topics")(
        lambda cls, v: None if v is None else _subscription_topics(v)
    )


class RecoverIn(_Input):
    since: UtcTime = Field(description="RFC 3339; failed and dead deliveries since then.")


class PortalLinkIn(_Input):
    partner: str = Field(min_length=1, max_length=64, description="The partner token's name.")
    ttl_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 86400,
        description="How long the link works, unused: 60 s to 7 days (default 1 hour).",
    )
