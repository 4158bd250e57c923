"""Check the setup before saying "ready": one signed request to the origin.

The relay and the pusher answer encoders and read folders without talking to the origin;
a wrong endpoint, missing credentials or a refused signature would otherwise show only as
every object failing, one log line at a time. :func:`preflight` makes one signed ListItems
of the prefix folder (a read: it changes nothing) and lets the client's typed error out.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

from .. import rules
from ..errors import AccessDeniedError, DeadlineExceeded, ObjectNotFoundError
from ..retry import RetryPolicy

if TYPE_CHECKING:
    from ..client import ContainerClient

__all__ = ["PREFLIGHT_TIMEOUT", "preflight"]

#: Seconds the check may take, retries included.
PREFLIGHT_TIMEOUT: Final = 10.0
# One retry: a transient 5xx should not stop a start, a dead endpoint should stop it fast.
_RETRY: Final = RetryPolicy(max_attempts=2)


async def preflight(
    store: ContainerClient, prefix: str = "", *, within: float = PREFLIGHT_TIMEOUT
) -> None:
    """One signed ListItems of ``prefix`` (the container's root when empty) at ``store``.

    Returns when the origin accepted the keys: a folder that does not exist yet is fine
    (the first publication creates it), and so is an ``AccessDeniedError`` (keys allowed to
    write but not to list, as an encoder's often are: the signature was accepted). Raises
    the client's error otherwise: :class:`~msd_async.ConnectError` for an endpoint nobody
    answers at, :class:`~msd_async.CredentialsError` without credentials,
    :class:`~msd_async.AuthError` (``InvalidSignatureError``, ``UnrecognizedClientError``,
    ``MissingAuthenticationTokenError``) for refused keys or signature,
    :class:`~msd_async.MediaStoreTimeout` after ``within`` seconds.
    """
    folder = rules.normalize_folder_path(prefix) or None
    with contextlib.suppress(ObjectNotFoundError, AccessDeniedError):
        try:
            await store.list_items_page(folder, max_results=1, deadline=within, retry=_RETRY)
        except DeadlineExceeded as exc:
            # The call's own message says "deadline=", which a command's operator cannot
            # give: say what the check was and what they can do.
            raise DeadlineExceeded(
                f"the origin at {store.endpoint} did not answer the start-up check (one "
                f"signed ListItems) within {within:g} s; check the endpoint and its health, "
                "or start without the check (--no-preflight)",
                attempts=exc.attempts,
            ) from exc
