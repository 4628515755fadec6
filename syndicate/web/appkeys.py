"""Typed application state keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from storage import Storage
from syndicate.core.settings import Settings

if TYPE_CHECKING:
    from syndicate.delivery.service import DeliveryService

STORAGE = web.AppKey("storage", Storage)
SETTINGS = web.AppKey("settings", Settings)
DELIVERY: web.AppKey[DeliveryService] = web.AppKey("delivery")
