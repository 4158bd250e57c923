"""The worst paths of credentials: keys that cannot be right, a provider whose source hangs
or fails, credentials that expire under load, a clock the service will not accept. Each
ends in a typed error that names the cause and what to do, before anything is sent where
that can be known, with nothing left running."""

from __future__ import annotations

import logging

import anyio
import pytest

from msd_async import Credentials, CredentialsError, MediaStoreError, RetryPolicy, Session
from msd_async.credentials import EnvironmentCredentials
from msd_async.testing import LocalMediaStore

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLETOKENxyzzy"

# --- keys that cannot be right --------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        (("", SECRET), "access key id is empty"),
        (("AKIDEXAMPLE", ""), "secret access key is empty"),
        (("AKIDEXAMPLE\n", SECRET), "access key id 'AKIDEXAMPLE\\n' holds '\\n'"),
        ((" AKIDEXAMPLE", SECRET), "access key id ' AKIDEXAMPLE' holds ' '"),
        (("AKIDÉXAMPLE", SECRET), "access key id 'AKIDÉXAMPLE' holds 'É'"),
        (("AKID/EXAMPLE", SECRET), "access key id 'AKID/EXAMPLE' holds '/'"),
        (("AKIDEXAMPLE", SECRET + "\n"), "secret access key starts or ends with white space"),
        (("AKIDEXAMPLE", " " + SECRET), "secret access key starts or ends with white space"),
        (("AKIDEXAMPLE", SECRET[:5] + "\x00" + SECRET[5:]), "holds a control character"),
        (("AKIDEXAMPLE", SECRET, TOKEN + "\r\n"), "session token holds white space"),
        (("AKIDEXAMPLE", SECRET, TOKEN + "é"), "session token holds a character that is not"),
    ],
    ids=[
        "empty-key", "empty-secret", "key-line-end", "key-space", "key-non-ascii", "key-slash",
        "secret-line-end", "secret-space", "secret-nul", "token-line-end", "token-non-ascii",
    ],
)
def test_keys_that_cannot_sign_are_refused_where_they_are_made(
    keys: tuple[str, ...], says: str
) -> None:
    """A line end in a key made aiohttp raise a bare ValueError ("header injection") from
    the first request; a space, an accent, a slash or an empty key went out and came back
    as a 403 whose advice (check the keys) did not say which part was wrong."""
    with pytest.raises(CredentialsError) as info:
        Credentials(*keys)
    assert says in str(info.value), str(info.value)
    assert SECRET not in str(info.value) and TOKEN not in str(info.value)
    assert info.value.attempts == 0


def test_keys_that_can_sign_are_kept() -> None:
    # Non-AWS servers issue other shapes of keys; only what cannot work is refused.
    Credentials("minio-admin_01", "pass word with spaces inside")
    Credentials("AKIDEXAMPLE", SECRET, "")  # an empty token is no token
    Credentials("AKIDEXAMPLE", "sécret", TOKEN + "/+=")


@pytest.mark.anyio
async def test_environment_keys_with_a_line_end_name_the_variable() -> None:
    provider = EnvironmentCredentials(
        {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET + "\r\n"}
    )
    with pytest.raises(CredentialsError, match="AWS_SECRET_ACCESS_KEY") as info:
        await provider.get_credentials()
    assert "white space" in str(info.value) and SECRET not in str(info.value)


class Returning:
    """A provider that builds its keys from a source on every call."""

    def __init__(self, *keys: str) -> None:
        self.keys = keys

    async def get_credentials(self) -> Credentials:
        return Credentials(*self.keys)


@pytest.mark.anyio
async def test_a_provider_handing_out_unusable_keys_sends_nothing(
    mediastore_server: LocalMediaStore, server_requests: list[logging.LogRecord]
) -> None:
    good = mediastore_server.credentials
    provider = Returning(good.access_key_id + "\n", good.secret_access_key)
    async with Session(
        credentials=provider, region=mediastore_server.region, retry=RetryPolicy.none()
    ) as session:
        store = session.container(mediastore_server.endpoint)
        with anyio.fail_after(30), pytest.raises(CredentialsError, match="holds '\\\\n'"):
            await store.put_object("x/a.ts", b"a")
        assert session.pool.in_use == 0
    assert server_requests == []
    assert isinstance(CredentialsError("x"), MediaStoreError)
