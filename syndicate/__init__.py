"""Syndicate: an article syndication service."""

from __future__ import annotations

from .app import create_app
from .settings import Settings, load_settings

__all__ = ["Settings", "create_app", "load_settings"]
__version__ = "0.1.0"
