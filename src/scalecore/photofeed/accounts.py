"""Accounts: sign up, log in, and finding people.

Part of :class:`~scalecore.photofeed.service.PhotoFeed`; reads the ports it needs from the
shared :class:`~scalecore.photofeed.context.ServiceContext`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from typing import cast

from scalecore.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound, ScalecoreError
from scalecore.photofeed.context import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PEOPLE_KEY,
    USERNAME_PATTERN,
    ServiceContext,
)
from scalecore.photofeed.models import (
    Account,
    FeedPosition,
    User,
    UserPage,
    user_from_json,
    user_to_json,
)
from scalecore.types import JSONValue
from scalecore.validate import check_int

__all__ = ["Accounts"]

logger = logging.getLogger("scalecore.photofeed.service")  # one logger for the service

_LOGIN_FAILED = "wrong username or password"
#: A username prefix to search by: what a username may start with.
_PREFIX_PATTERN = re.compile(r"[a-z0-9_]{0,32}")


class Accounts:
    """Sign up, log in (an unknown user costs a hash verification too), find people."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self._dummy_hash: str | None = None

    def sign_up(self, username: str, password: str) -> User:
        """Create an account; return its user.

        Raises ``InvalidInput`` unless ``username`` is 3-32 characters of a-z, 0-9 and "_"
        and ``password`` is 8-1024 characters; ``Conflict`` if the username is taken.
        """
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise InvalidInput("a username is 3 to 32 characters of a-z, 0-9 and _")
        if (
            not isinstance(password, str)
            or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
        ):
            raise InvalidInput(
                f"a password is {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long"
            )
        if not _is_text(password):
            raise InvalidInput("a password must be valid Unicode text")
        password_hash = self.ctx.hasher.hash(password)
        user = User(
            id=self.ctx.ids.new_for(username), username=username, created_at=self.ctx.stamp()
        )
        try:
            self.ctx.users.add(Account(user=user, password_hash=password_hash))
        except Conflict:
            raise Conflict(f"the username {username!r} is taken") from None
        # The first page of "recently joined" is the one people look at: show them at once.
        self.ctx.people_lists.invalidate(
            f"{PEOPLE_KEY}recent::{self.ctx.settings.people_default_limit}"
        )
        return user

    def authenticate(self, username: str, password: str) -> User:
        """Return the user whose credentials these are.

        Raises ``AuthenticationFailed``, with the same message, for an unknown user and
        for a wrong password; an unknown user still costs one hash verification, so the
        answer's timing does not tell which accounts exist. A hash made with outdated
        parameters is replaced after a successful login.
        """
        if (
            not isinstance(username, str)
            or not isinstance(password, str)
            or len(password) > MAX_PASSWORD_LENGTH
            or not _is_text(password)
        ):
            raise AuthenticationFailed(_LOGIN_FAILED)
        account: Account | None = None
        if USERNAME_PATTERN.fullmatch(username):
            with contextlib.suppress(NotFound):
                account = self.ctx.users.get_account(username)
        if account is None:
            self.ctx.hasher.verify(self._dummy(), password)
            raise AuthenticationFailed(_LOGIN_FAILED)
        if not self.ctx.hasher.verify(account.password_hash, password):
            raise AuthenticationFailed(_LOGIN_FAILED)
        if self.ctx.hasher.needs_rehash(account.password_hash):
            try:
                self.ctx.users.set_password_hash(account.user.id, self.ctx.hasher.hash(password))
            except ScalecoreError as exc:  # the old hash still works; try again next login
                logger.warning("could not store a rehashed password: %s", type(exc).__name__)
        return account.user

    def find_people(
        self, prefix: str | None = None, *, limit: int | None = None, after: str | None = None
    ) -> UserPage:
        """Return a page of accounts: those whose username starts with ``prefix`` in
        username order, or, without a prefix, the most recently joined first.

        ``prefix`` is trimmed and lower-cased, then must be up to 32 characters of a-z,
        0-9 and "_" (empty: no prefix). ``limit`` is 1..``people_max_limit`` (default
        ``people_default_limit``); ``after`` is a previous page's ``next_cursor``. Pages
        are cached for ``people_cache_ttl`` (on a shared cache, for every server), so a
        new account may take that long to show. Raises ``InvalidInput`` for a bad
        prefix, limit or cursor.
        """
        if limit is None:
            limit = self.ctx.settings.people_default_limit
        check_int(limit, "limit", minimum=1, maximum=self.ctx.settings.people_max_limit)
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidInput("search by the start of a username")
        wanted = (prefix or "").strip().lower()
        if not _PREFIX_PATTERN.fullmatch(wanted):
            raise InvalidInput("search by the start of a username: up to 32 of a-z, 0-9 and _")
        if after is not None and not isinstance(after, str):
            raise InvalidInput("the cursor is malformed")
        if wanted:
            if after is not None and not USERNAME_PATTERN.fullmatch(after):
                raise InvalidInput("the cursor is malformed")
            key = f"{PEOPLE_KEY}name:{wanted}:{after or ''}:{limit}"
            value = self.ctx.people_lists.get_or_compute(
                key,
                lambda: [
                    user_to_json(user)
                    for user in self.ctx.users.search(wanted, limit=limit + 1, after=after)
                ],
            )
            users = [user_from_json(item) for item in cast(list[JSONValue], value)]
            page = tuple(users[:limit])
            more = len(users) > limit
            return UserPage(items=page, next_cursor=page[-1].username if more else None)
        position = FeedPosition.decode(after) if after is not None else None
        key = f"{PEOPLE_KEY}recent:{after or ''}:{limit}"
        value = self.ctx.people_lists.get_or_compute(
            key,
            lambda: [
                user_to_json(user)
                for user in self.ctx.users.recent(limit=limit + 1, before=position)
            ],
        )
        users = [user_from_json(item) for item in cast(list[JSONValue], value)]
        page = tuple(users[:limit])
        cursor = FeedPosition(page[-1].created_at, page[-1].id).encode() if page else None
        return UserPage(items=page, next_cursor=cursor if len(users) > limit else None)

    def _dummy(self) -> str:
        """A hash of a random password, verified against when the user is unknown."""
        dummy = self._dummy_hash
        if dummy is None:
            # Two threads may both make one; either is as good, and the race is harmless.
            dummy = self._dummy_hash = self.ctx.hasher.hash(secrets.token_urlsafe(16))
        return dummy


def _is_text(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (JSON can carry lone surrogates; hashers cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
