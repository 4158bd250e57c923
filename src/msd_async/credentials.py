"""AWS credentials and where they come from.

A provider is anything with ``async def get_credentials() -> Credentials``. The session
asks its provider before every signature; providers cache and refresh on their own.
Secrets never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Credentials", "CredentialsProvider"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A set of AWS keys. ``session_token`` is set for temporary credentials.

    The repr shows the access key id only: secrets stay out of logs and tracebacks.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    #: When temporary credentials stop working (UTC), if known.
    expiry: _dt.datetime | None = None

    async def get_credentials(self) -> Credentials:
        """A :class:`Credentials` is its own (static) provider."""
        return self


@runtime_checkable
class CredentialsProvider(Protocol):
    """Source of credentials; called before each request is signed, so it must be cheap
    when nothing needs refreshing."""

    async def get_credentials(self) -> Credentials: ...
