"""The one error tree: every error Syndicate raises on purpose is a ``SyndicateError``.

    SyndicateError
    ├── Problem                 an answer to a request (status, detail, field errors);
    │                           raised anywhere below the web layer, rendered by it
    ├── SettingsError           a setting that cannot be used (core.settings)
    ├── InvalidInput            input that cannot be used, with a message for the user
    │   ├── BadCursor           a page cursor we did not issue (content.articles)
    │   ├── ContentTooComplex   content past the sanitizing bounds (content.html_limits)
    │   └── ImportFileError     an import file that cannot be read (content.importer)
    ├── EgressRefused           a URL the egress guard will not contact (delivery.egress)
    └── StorageError            the database (storage.errors: NotFound, Conflict, ...)

The web layer maps each to problem+json (web.problems); the CLI prints one line and
exits non-zero. This module imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

from http import HTTPStatus

#: Where a problem's ``type`` URI starts (RFC 9457).
TYPE_BASE = "https://syndicate.invalid/problems/"


class SyndicateError(Exception):
    """The root of every error Syndicate raises on purpose."""


class InvalidInput(SyndicateError, ValueError):
    """Input that cannot be used; ``str()`` is written for the person who sent it."""


class Problem(SyndicateError):
    """An error response. ``errors`` lists ``{"field", "message"}`` for validation
    (at most ``web.problems.MAX_ERRORS``; ``errors_omitted`` counts the rest)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, str]] | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        errors_omitted: int = 0,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.errors_omitted = errors_omitted
        self.type = type or TYPE_BASE + self.title.lower().replace(" ", "-")
        self.headers = headers or {}
