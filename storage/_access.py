"""The part of the storage interface that says who may come in: API tokens, and the
portal's sessions and single-use sign-in links. ``storage.base.Storage`` includes
it; the contract at the top of ``storage/base.py`` holds here too."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from .records import PortalSession, Role, Token


class AccessStorage(Protocol):
    # -- tokens -----------------------------------------------------------------

    async def create_token(
        self, *, name: str, role: Role, token_hash: str, now: datetime | None = None
    ) -> Token:
        """Store a token by its hash; ``TokenExists`` when the name is taken,
        ``TokenNameKeepsRole`` when the name's last (revoked) token had another role."""

    async def get_token_by_hash(self, token_hash: str) -> Token | None:
        """The unrevoked token with that hash, if any."""

    async def touch_token(self, token_id: int, *, now: datetime | None = None) -> None:
        """Record that the token was just used."""

    async def count_tokens(self) -> int:
        """How many unrevoked tokens exist."""

    async def list_tokens(self) -> list[Token]:
        """Every token, revoked ones included, oldest first."""

    async def revoke_token(self, name: str, *, now: datetime | None = None) -> Token | None:
        """Revoke the named live token and return it. ``None`` when no token ever had
        that name; ``TokenAlreadyRevoked`` when its tokens are all revoked already.
        (A name is unique among live tokens only: a revoked token's name may be
        given to a new one.) Its portal sessions and unused portal links are deleted
        in the same transaction."""

    async def get_live_token(self, name: str) -> Token | None:
        """The unrevoked token of that name, if any."""

    # -- portal sessions and sign-in links ----------------------------------------

    async def create_portal_session(
        self,
        *,
        session_hash: str,
        token_id: int,
        expires_at: datetime,
        now: datetime | None = None,
    ) -> None:
        """Store a session by the hash of its cookie, acting as the token ``token_id``."""

    async def get_portal_session(
        self, session_hash: str, *, now: datetime | None = None
    ) -> PortalSession | None:
        """The session with that hash if it has not expired at ``now`` and its token
        is not revoked; None otherwise."""

    async def delete_portal_session(self, session_hash: str) -> None:
        """End one session (sign-out); nothing when there is none."""

    async def delete_portal_sessions(self, token_id: int) -> int:
        """End every session of a token; returns how many."""

    async def create_portal_link(
        self,
        *,
        link_hash: str,
        token_id: int,
        expires_at: datetime,
        now: datetime | None = None,
    ) -> None:
        """Store a single-use sign-in link by the hash of its secret."""

    async def use_portal_link(self, link_hash: str, *, now: datetime | None = None) -> Token | None:
        """Spend the link: in one statement, mark it used and return its token, if
        the link exists, was never used, has not expired at ``now`` and its token is
        not revoked. Two concurrent uses: exactly one gets the token."""

    async def prune_portal(self, *, now: datetime | None = None, limit: int = 10_000) -> int:
        """Delete up to ``limit`` expired sessions and expired or used links;
        returns how many rows went."""
