"""Pure feed rendering: article records in, RSS / Atom / JSON Feed bytes out. No I/O."""

from __future__ import annotations

__all__: list[str] = []
