"""Syndicate: an article syndication service.

The layers, top to bottom: cli -> web -> delivery -> content -> (feeds, storage) -> core.
See the README's "Layout" section.
"""

__version__ = "0.1.0"
