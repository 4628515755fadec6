"""Typed application state keys."""

from __future__ import annotations

from aiohttp import web

from storage import Storage

from .settings import Settings

STORAGE = web.AppKey("storage", Storage)
SETTINGS = web.AppKey("settings", Settings)
