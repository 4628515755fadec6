"""Validation errors as users read them: ``[{field, message}]`` with dotted field
paths, bounded in number and length, raised as a 422 ``Problem`` (core.errors)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from syndicate.core.errors import Problem

#: Validation errors a response lists; past it, it counts the rest.
MAX_ERRORS = 50
#: Characters of one error's field or message a response carries.
MAX_ERROR_TEXT = 200

M = TypeVar("M", bound=BaseModel)


def invalid(field: str, message: str) -> Problem:
    return invalid_fields([{"field": field, "message": message}])


def invalid_fields(errors: list[dict[str, str]]) -> Problem:
    """422 naming the first ``MAX_ERRORS`` errors; the body counts the rest."""
    shown = [_bounded(e) for e in errors[:MAX_ERRORS]]
    omitted = len(errors) - len(shown)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in shown)
    if omitted:
        detail += f"; and {omitted} more"
    return Problem(422, detail, title="Invalid fields", errors=shown, errors_omitted=omitted)


def _bounded(error: dict[str, str]) -> dict[str, str]:
    """An error with its field and message cut to a readable length (a field
    path may hold a client's megabyte-long key)."""
    return {name: _cut(text, MAX_ERROR_TEXT) for name, text in error.items()}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validation_errors(
    exc: ValidationError, prefix: str = "", *, limit: int | None = MAX_ERRORS
) -> list[dict[str, str]]:
    """pydantic errors as ``[{field, message}]`` with dotted field paths, each cut
    to ``MAX_ERROR_TEXT``: the first ``limit`` of them, then one entry counting the
    rest (``limit=None``: all)."""
    errors = []
    details = exc.errors(include_url=False)
    shown = details if limit is None else details[:limit]
    for error in shown:
        loc = [str(part) for part in error["loc"]]
        field = ".".join(loc) if loc else "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        message = message.removeprefix("Value error, ")
        if prefix:
            field = f"{prefix}.{field}" if field != "body" else prefix
        errors.append(_bounded({"field": field, "message": message}))
    if len(shown) < len(details):
        more = len(details) - len(shown)
        errors.append({"field": prefix or "body", "message": f"and {more} more errors"})
    return errors


def validate(
    model: type[M], data: Any, *, prefix: str = "", context: dict[str, Any] | None = None
) -> M:
    """Validate a JSON value against a model; 422 naming every bad field."""
    if not isinstance(data, dict):
        raise invalid_fields([{"field": prefix or "body", "message": "expected a JSON object"}])
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise invalid_fields(validation_errors(exc, prefix, limit=None)) from None
