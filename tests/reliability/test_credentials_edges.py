"""The worst paths of credentials: keys that cannot be right, a provider whose source hangs
or fails, credentials that expire under load, a clock the service will not accept. Each
ends in a typed error that names the cause and what to do, before anything is sent where
that can be known, with nothing left running."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from multidict import CIMultiDict
from scripted_server import Connection, response, scripted_server

from msd_async import (
    AccessDeniedError,
    AuthError,
    ClockSkewError,
    Credentials,
    CredentialsError,
    DeadlineExceeded,
    InvalidSignatureError,
    MediaStoreError,
    RetryPolicy,
    ServerError,
    Session,
    Timeouts,
    UnrecognizedClientError,
    protocol,
)
from msd_async.credentials import AwsChainCredentials, EnvironmentCredentials
from msd_async.signing import SigV4Signer
from msd_async.testing import LocalMediaStore
from msd_async.testing.auth import AuthFailure, Verifier

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
        with anyio.fail_after(30), pytest.raises(CredentialsError) as info:
            await store.put_object("x/a.ts", b"a")
        assert "holds '\\n'" in str(info.value)
        assert info.value.attempts == 0  # nothing was sent (errors.py: 0 before sending)
        assert session.pool.in_use == 0
    assert server_requests == []
    assert isinstance(CredentialsError("x"), MediaStoreError)


# --- a credential_process that hangs ---------------------------------------------------------


def _hanging_process(home: Path) -> Path:
    """A profile ``hang`` whose credential_process waits for input that never comes (an
    MFA prompt, a browser login); returns its script."""
    script = home / "hang.py"
    script.write_text("import time\ntime.sleep(120)\n")
    (home / "config").write_text(
        f"[profile hang]\ncredential_process = {sys.executable} {script}\n"
    )
    return script


def _still_running(script: Path) -> list[int]:
    """The processes running ``script`` that have not ended (a zombie has ended)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(script).encode() in command and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.anyio
async def test_a_credential_process_given_up_on_is_ended_not_left_running(
    aws_home: Path, mediastore_server: LocalMediaStore, server_requests: list[logging.LogRecord]
) -> None:
    """Timeouts.credentials ended the wait, but the process went on: every later call
    started one more, so a publisher retrying every segment piled up hung processes."""
    script = _hanging_process(aws_home)
    async with Session(
        profile="hang", region=mediastore_server.region, timeouts=Timeouts(credentials=1)
    ) as session:
        store = session.container(mediastore_server.endpoint)
        for _ in range(2):
            with anyio.fail_after(30), pytest.raises(CredentialsError, match=r"within 1 s"):
                await store.describe_object("x/a.ts")
        assert _still_running(script) == []
        # The call's deadline, well inside Timeouts.credentials, ends it the same way.
        with anyio.fail_after(30), pytest.raises(DeadlineExceeded):
            await store.describe_object("x/a.ts", deadline=0.25)
        assert _still_running(script) == []
        # And so does cancelling the call.
        with anyio.move_on_after(0.25) as scope:
            await store.describe_object("x/a.ts")
        assert scope.cancelled_caught
        assert _still_running(script) == []
        assert session.pool.in_use == 0
    assert server_requests == []


@pytest.mark.anyio
async def test_a_credential_process_of_an_assume_role_source_profile_is_ended_too(
    aws_home: Path, mediastore_server: LocalMediaStore, server_requests: list[logging.LogRecord]
) -> None:
    """A role profile whose source_profile gets its keys from a credential_process: that
    process is started by aiobotocore's assume-role provider, not the chain's own process
    provider, and ran on when the wait for it was given up."""
    script = _hanging_process(aws_home)
    (aws_home / "config").write_text(
        (aws_home / "config").read_text().replace("[profile hang]", "[profile source]")
        + "[profile role]\nrole_arn = arn:aws:iam::123456789012:role/media\n"
        "source_profile = source\n"
    )
    async with Session(
        profile="role", region=mediastore_server.region, timeouts=Timeouts(credentials=1)
    ) as session:
        store = session.container(mediastore_server.endpoint)
        with anyio.fail_after(30), pytest.raises(CredentialsError, match=r"within 1 s"):
            await store.describe_object("x/a.ts")
        assert _still_running(script) == []
    assert server_requests == []


@pytest.mark.anyio
async def test_a_deadline_passed_waiting_for_the_credentials_says_so(
    mediastore_server: LocalMediaStore, server_requests: list[logging.LogRecord]
) -> None:
    """The call's deadline, passed while the provider had not answered, read "passed
    during attempt 1 (attempts made: 1) ... check the endpoint's health": nothing had been
    sent, and the endpoint was not what to check."""
    answered = anyio.Event()

    class Waiting:
        """A provider whose source takes longer than the call may (an MFA prompt)."""

        async def get_credentials(self) -> Credentials:
            await answered.wait()
            return mediastore_server.credentials

    async with Session(
        credentials=Waiting(), region=mediastore_server.region, timeouts=Timeouts(credentials=30)
    ) as session:
        store = session.container(mediastore_server.endpoint)
        with anyio.fail_after(20), pytest.raises(DeadlineExceeded) as caught:
            await store.describe_object("x/a.ts", deadline=0.25)
    text = str(caught.value)
    assert "waiting for the credentials provider Waiting" in text, text
    assert "endpoint" not in text, text
    assert caught.value.attempts == 0  # as a CredentialsError counts: nothing was sent
    assert server_requests == []


# --- a clock the service will not accept -------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("server_ahead", "this_clock_is"), [(20 * 60, "behind"), (-20 * 60, "ahead of")]
)
async def test_a_clock_the_service_refuses_is_named_with_the_fix(
    server_ahead: int, this_clock_is: str
) -> None:
    """A request dated more than 15 minutes off the service's clock came back as a plain
    InvalidSignatureError; on a HEAD (no body, no message) it read "HTTP 403 with no error
    message", and the advice of the class (check the keys) sent people the wrong way."""
    async with LocalMediaStore(clock_skew=server_ahead) as server, Session(
        credentials=server.credentials, region=server.region
    ) as session:
        store = session.container(server.endpoint)
        calls = {
            "HEAD": lambda: store.describe_object("x/a.ts"),
            "PUT": lambda: store.put_object("x/a.ts", b"a"),
            "GET": lambda: store.get_bytes("x/a.ts"),
        }
        for method, call in calls.items():
            with anyio.fail_after(30), pytest.raises(ClockSkewError) as info:
                await call()
            error = info.value
            assert isinstance(error, InvalidSignatureError), method
            assert error.attempts == 1, method  # a 403 is not retried: the clock stays off
            assert error.skew is not None and abs(error.skew + server_ahead) < 60, method
            text = str(error)
            assert f"this machine's clock is about {abs(server_ahead) // 60} min" in text, text
            assert this_clock_is in text and "15 minutes" in text and "NTP" in text, text


@pytest.mark.anyio
async def test_a_clock_within_the_allowance_signs_as_usual() -> None:
    async with LocalMediaStore(clock_skew=-13 * 60) as server, Session(
        credentials=server.credentials, region=server.region
    ) as session:
        store = session.container(server.endpoint)
        await store.put_object("x/a.ts", b"a")
        assert await store.get_bytes("x/a.ts") == b"a"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("keys", "cls", "advice"),
    [
        (("AKIDLOCALMEDIASTORE", "not-the-secret"), InvalidSignatureError,
         "check the secret access key and the region"),
        (("AKIDUNKNOWN", "local-mediastore-secret-key"), UnrecognizedClientError,
         "check the access key id"),
    ],
    ids=["wrong-secret", "unknown-key"],
)
async def test_a_refused_head_says_what_to_check(
    mediastore_server: LocalMediaStore, keys: tuple[str, str], cls: type[Exception], advice: str
) -> None:
    """A HEAD's 403 carries no body: the error read "HTTP 403 with no error message"."""
    async with Session(
        credentials=Credentials(*keys), region=mediastore_server.region
    ) as session:
        store = session.container(mediastore_server.endpoint)
        with anyio.fail_after(30), pytest.raises(cls) as info:
            await store.describe_object("x/a.ts")
    assert not isinstance(info.value, ClockSkewError)
    assert advice in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("InvalidSignatureException",
         "Signature expired: 20261207T100000Z is now earlier than 20261207T101500Z "
         "(20261207T103000Z - 15 min.)"),
        ("InvalidSignatureException",
         "Signature not yet current: 20261207T110000Z is still later than 20261207T104500Z "
         "(20261207T103000Z + 15 min.)"),
        ("RequestExpired", "Request has expired."),
    ],
    ids=["expired", "not-yet-current", "request-expired"],
)
@pytest.mark.parametrize("status", [403, 400])
def test_the_services_words_for_a_refused_date_are_read_without_a_date_header(
    code: str, message: str, status: int
) -> None:
    """The service's own messages (AWS SigV4, CommonErrors), through a proxy that
    dropped the Date header: the cause is still named, the skew unknown. CommonErrors
    lists RequestExpired with HTTP 400: that was a plain AuthError without the fix."""
    error = protocol.parse_error(
        status,
        {"x-amzn-ErrorType": code},
        json.dumps({"Message": message}).encode(),
        object_operation=True,
        method="GET",
    )
    assert isinstance(error, ClockSkewError) and error.skew is None
    assert error.code == code and message in str(error)
    assert "more than 15 minutes from the service's clock" in str(error)
    assert "NTP" in str(error)


_STALE = 20 * 60  # seconds a cached answer's Date lags: past the 15 min SigV4 allows


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "message", "cls"),
    [
        ("AccessDeniedException", "User is not authorized to perform GetObject",
         AccessDeniedError),
        ("InvalidSignatureException",
         "The request signature we calculated does not match the signature you provided.",
         InvalidSignatureError),
        ("InvalidSignatureException",
         "Signature expired: 20261207T100000Z is now earlier than 20261207T101500Z "
         "(20261207T103000Z - 15 min.)", ClockSkewError),
    ],
    ids=["access-denied", "signature-mismatch", "signature-expired"],
)
async def test_a_stale_403_is_read_by_what_it_says_not_by_its_date(
    code: str, message: str, cls: type[InvalidSignatureError]
) -> None:
    """A 403 whose Date is 20 minutes old (an answer a cache or proxy kept) was read as
    ClockSkewError whatever it said: an AccessDenied sent people to fix their clock. The
    answer's code and words decide; a stale Date is only mentioned."""
    date = email.utils.formatdate(time.time() - _STALE, usegmt=True)

    async def stale(conn: Connection) -> None:
        while await conn.read_request() is not None:
            body = json.dumps({"Message": message}).encode()
            await conn.send(response(403, body, headers={
                "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/", "Date": date,
                "Content-Type": "application/x-amz-json-1.1",
            }))

    async with scripted_server(stale) as server, Session(
        credentials=Credentials("AKIDEXAMPLE", SECRET), region="us-east-1"
    ) as session:
        with anyio.fail_after(30), pytest.raises(AuthError) as info:
            await session.container(server.endpoint).get_bytes("x/a.ts")
    error = info.value
    assert type(error) is cls and error.code == code and error.attempts == 1
    assert message in str(error)
    if cls is ClockSkewError:
        assert isinstance(error, ClockSkewError)
        assert error.skew is not None and abs(error.skew - _STALE) < 60
        assert "NTP" in str(error)
    else:
        assert "NTP" not in str(error)
        assert "Date is about 20 min off" in str(error), str(error)


# --- every attempt is signed afresh ----------------------------------------------------------


class Expiring:
    """Hands out ``first`` for ``lifetime`` seconds from the first call, then ``second``
    (a provider's refresh)."""

    def __init__(self, first: Credentials, second: Credentials, lifetime: float) -> None:
        self.first, self.second, self.lifetime = first, second, lifetime
        self.expires: float | None = None
        self.calls = 0

    async def get_credentials(self) -> Credentials:
        self.calls += 1
        now = time.monotonic()
        if self.expires is None:
            self.expires = now + self.lifetime
        return self.first if now < self.expires else self.second


@pytest.mark.anyio
@pytest.mark.parametrize("streaming", [False, True], ids=["standard", "streaming"])
async def test_a_retry_after_the_keys_expired_is_signed_with_the_new_keys_and_date(
    streaming: bool,
) -> None:
    """The retry of a PUT whose keys expired in between must not resend the first
    attempt's signature (its keys, its date): each attempt asks the provider and signs at
    its own time. The scripted peer answers 500 with Retry-After: 1 once, then 200; both
    requests are checked with the local server's own SigV4 verifier."""
    old = Credentials("ASIAOLDKEY", "old-secret", "old-token")
    new = Credentials("ASIANEWKEY", "new-secret", "new-token")
    put_result = json.dumps(
        {"ContentSHA256": "0" * 64, "ETag": "e", "StorageClass": "TEMPORAL"}
    ).encode()

    async def handler(conn: Connection) -> None:
        while await conn.read_request() is not None:
            if len(conn.server.requests) == 1:
                body = json.dumps({"Message": "try again"}).encode()
                await conn.send(response(500, body, headers={
                    "x-amzn-ErrorType": "InternalServerError", "Retry-After": "1",
                }))
            else:
                await conn.send(response(200, put_result))

    async def chunks() -> AsyncIterator[bytes]:
        yield b"segment "
        yield b"bytes"

    provider = Expiring(old, new, lifetime=0.5)
    async with scripted_server(handler) as server, Session(
        credentials=provider, region="us-east-1"
    ) as session:
        store = session.container(server.endpoint)
        with anyio.fail_after(30):
            await store.put_object("live/a.ts", chunks if streaming else b"segment bytes",
                                   streaming=streaming)
    first, second = server.requests
    assert provider.calls == 2
    assert first.body == second.body == b"segment bytes"
    verifier = Verifier([old, new], "us-east-1")
    signed_with = []
    for request in (first, second):
        keys, _ = verifier.verify(
            method="PUT", raw_path=request.target, query=[],
            headers=CIMultiDict(request.headers), has_body=True,
        )
        signed_with.append(keys.access_key_id)
    assert signed_with == ["ASIAOLDKEY", "ASIANEWKEY"]
    assert first.headers["x-amz-security-token"] == "old-token"
    assert second.headers["x-amz-security-token"] == "new-token"
    assert second.headers["x-amz-date"] > first.headers["x-amz-date"]


# --- temporary credentials from the AWS chain, at their expiry -------------------------------

# A credential_process handing out a new key pair on every run (a counter in a file), valid
# for the seconds in the file ``expires``; it fails, without counting, while ``fail`` exists.
_PROCESS = """
import datetime, json, pathlib, sys
home = pathlib.Path(sys.argv[1])
if (home / "fail").exists():
    sys.exit("the token service is unreachable")
counter = home / "counter"
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
seconds = float((home / "expires").read_text())
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
print(json.dumps({
    "Version": 1, "AccessKeyId": f"ASIATEMP{n}", "SecretAccessKey": f"secret-{n}",
    "SessionToken": f"token-{n}", "Expiration": expires.isoformat(),
}))
"""


def _temporary_keys(n: int) -> Credentials:
    return Credentials(f"ASIATEMP{n}", f"secret-{n}", f"token-{n}")


@pytest.mark.anyio
async def test_many_calls_at_the_expiry_refresh_once_and_a_failed_refresh_is_tried_again(
    aws_home: Path,
) -> None:
    script = aws_home / "process.py"
    script.write_text(_PROCESS)
    (aws_home / "config").write_text(
        f"[profile temp]\ncredential_process = {sys.executable} {script} {aws_home}\n"
    )
    (aws_home / "expires").write_text("3600")
    counter = aws_home / "counter"
    provider = AwsChainCredentials("temp")
    async with LocalMediaStore(
        extra_credentials=[_temporary_keys(n) for n in range(1, 6)]
    ) as server, Session(credentials=provider, region=server.region) as session:
        store = session.container(server.endpoint)
        calls = 20

        async def list_all() -> None:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    for _ in range(calls):
                        group.start_soon(store.list_items_page, "x")

        # Twenty first calls at once: the chain is searched, and the process run, once.
        await list_all()
        assert counter.read_text() == "1"

        # The keys enter aiobotocore's mandatory refresh window (an hour left, less than
        # the window now): twenty calls at once wait for one refresh, all signing with it.
        source = await provider._resolve()
        source._advisory_refresh_timeout = 3700
        source._mandatory_refresh_timeout = 3650
        (aws_home / "expires").write_text("7200")
        await list_all()
        assert counter.read_text() == "2"
        assert (await provider.get_credentials()).access_key_id == "ASIATEMP2"

        # A refresh that fails inside the mandatory window is a CredentialsError that says
        # what to do, nothing is sent, and the failure is not kept: the next call tries
        # again and signs with what that refresh brings.
        source._advisory_refresh_timeout = 7400
        source._mandatory_refresh_timeout = 7300
        (aws_home / "fail").write_text("")
        with anyio.fail_after(60), pytest.raises(CredentialsError) as info:
            await store.list_items_page("x")
        text = str(info.value)
        assert "the token service is unreachable" in text and "custom-process" in text, text
        assert "the next call tries again" in text, text
        (aws_home / "fail").unlink()
        (aws_home / "expires").write_text("9000")
        with anyio.fail_after(60):
            await store.list_items_page("x")
        assert counter.read_text() == "3"
        assert (await provider.get_credentials()).access_key_id == "ASIATEMP3"


# --- Retry-After against the call's deadline ---------------------------------------------------


def _always(status: int, retry_after: str) -> Callable[[Connection], Awaitable[None]]:
    async def handler(conn: Connection) -> None:
        while await conn.read_request() is not None:
            body = json.dumps({"Message": "busy"}).encode()
            await conn.send(response(status, body, headers={
                "x-amzn-ErrorType": "ServiceUnavailable", "Retry-After": retry_after,
            }))

    return handler


@pytest.mark.anyio
@pytest.mark.parametrize(
    "retry_after",
    ["99999999999999999999", "3600", "in ten minutes"],
    ids=["huge", "an-hour", "a-date-ahead"],
)
async def test_a_retry_after_past_the_deadline_ends_the_call_at_once_saying_why(
    scripted_session: Session, retry_after: str
) -> None:
    """Capped at retry_after_max (20 s), the wait still ends past a 5 s deadline: the call
    fails at once, without sleeping, with DeadlineExceeded that names the server's
    Retry-After (it read "backoff 20.000 s", as if the client had chosen to wait)."""
    if retry_after == "in ten minutes":
        # Dated when the test runs, not when it is collected: a suite slower than ten
        # minutes up to here (a loaded CI machine) made it a date past.
        retry_after = email.utils.formatdate(time.time() + 600, usegmt=True)
    scripted_session.retry = RetryPolicy()
    async with scripted_server(_always(503, retry_after)) as server:
        store = scripted_session.container(server.endpoint)
        started = time.monotonic()
        with anyio.fail_after(30), pytest.raises(DeadlineExceeded) as info:
            await store.list_items_page("x", deadline=5)
        assert time.monotonic() - started < 4  # well inside the deadline: nothing slept
    assert len(server.requests) == 1 and info.value.attempts == 1
    text = str(info.value)
    assert "deadline of 5 s" in text and "Retry-After" in text and "20.000 s" in text, text
    assert isinstance(info.value.__cause__, ServerError)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "retry_after", ["-30", "soon", "1.5e3", "Wed, 21 Oct 2015 07:28:00 GMT", ""],
    ids=["negative", "words", "float", "a-date-past", "empty"],
)
async def test_a_retry_after_that_asks_nothing_usable_leaves_the_backoff(
    scripted_session: Session, retry_after: str
) -> None:
    """Read as a wait (-30 as 30 s, 1.5e3 as 1500 s), any of these would end a 10 s
    deadline at once; ignored (a date past is "now"), the retry comes after the backoff."""
    scripted_session.retry = RetryPolicy(max_attempts=2)
    async with scripted_server(_always(503, retry_after)) as server:
        store = scripted_session.container(server.endpoint)
        with anyio.fail_after(30), pytest.raises(ServerError) as info:
            await store.list_items_page("x", deadline=10)
    assert len(server.requests) == 2 and info.value.attempts == 2


# --- keys known to have expired ---------------------------------------------------------------

_PAST = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)


class Stale:
    """A provider whose refresh is broken: it hands out keys that expired."""

    async def get_credentials(self) -> Credentials:
        return Credentials("ASIASTALE", "secret", "token", _PAST)


@pytest.mark.anyio
@pytest.mark.parametrize("given", ["static", "provider"])
async def test_keys_known_to_have_expired_are_not_sent(
    mediastore_server: LocalMediaStore, server_requests: list[logging.LogRecord], given: str
) -> None:
    """They went out and came back as a 403 (ExpiredTokenException from the service; the
    local server even accepted them); the expiry was known before sending."""
    good = mediastore_server.credentials
    credentials: Credentials | Stale = (
        Credentials(good.access_key_id, good.secret_access_key, expiry=_PAST)
        if given == "static"
        else Stale()
    )
    async with Session(credentials=credentials, region=mediastore_server.region) as session:
        store = session.container(mediastore_server.endpoint)
        calls = (lambda: store.describe_object("x/a.ts"), lambda: store.presign_get("x/a.ts"))
        for call in calls:
            with anyio.fail_after(30), pytest.raises(CredentialsError) as info:
                await call()
            text = str(info.value)
            assert "expired at " + _PAST.isoformat() in text, text
            assert (given == "static") == ("new keys" in text), text
            assert (given == "provider") == ("Stale" in text and "refresh" in text), text
            assert info.value.attempts == 0
    assert server_requests == []


@pytest.mark.parametrize("clock", ["aware", "naive"])
def test_the_local_server_refuses_a_token_past_its_expiry(clock: str) -> None:
    """As the service answers temporary keys used after their Expiration. A naive
    ``expiry`` (the client reads it as local time, as ``datetime.timestamp()`` does) made
    the local server compare it with an aware clock: a TypeError, answered 500 with a
    traceback in its log, for keys the client had just found fresh."""
    now = dt.datetime.now(dt.UTC) if clock == "aware" else dt.datetime.now()
    expired = Credentials("ASIATEMP", "secret", "token", now - dt.timedelta(hours=1))
    fresh = Credentials("ASIAFRESH", "secret", "token", now + dt.timedelta(hours=1))
    verifier = Verifier([expired, fresh], "us-east-1")
    signer = SigV4Signer("us-east-1")
    for keys in (expired, fresh):
        headers = signer.sign(keys, method="GET", host="h", path="/x/a.ts")
        check = functools.partial(
            verifier.verify, method="GET", raw_path="/x/a.ts", query=[],
            headers=CIMultiDict({**headers, "host": "h"}), has_body=False,
        )
        if keys is fresh:
            assert check()[0] is fresh
            continue
        with pytest.raises(AuthFailure) as info:
            check()
        assert info.value.code == "ExpiredTokenException"
        assert "expired" in info.value.message
