"""AWS credentials, where they come from, and the signing region.

A provider is anything with ``async def get_credentials() -> Credentials``. The session
asks its provider before every signature, so providers cache and refresh on their own and
answer in microseconds when nothing has to change.

============================  ==============================================================
Provider                      Source
============================  ==============================================================
:class:`Credentials`          static keys; the object is its own provider
:class:`EnvironmentCredentials`  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
                              ``AWS_SESSION_TOKEN`` (pure Python, re-read on every call)
:class:`AwsChainCredentials`  the full AWS chain through aiobotocore: environment, shared
                              files and profiles, SSO, assume-role, ``credential_process``,
                              container and EC2 instance metadata; temporary credentials are
                              refreshed asynchronously
============================  ==============================================================

:func:`resolve_credentials` picks one of them the way :class:`~msd_async.Session` does.

Secrets never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from .errors import CredentialsError, InvalidParameterError

__all__ = [
    "AwsChainCredentials",
    "Credentials",
    "CredentialsProvider",
    "EnvironmentCredentials",
    "resolve_credentials",
    "resolve_region",
]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A set of AWS keys. ``session_token`` is set for temporary credentials.

    The repr shows the access key id only: secrets stay out of logs and tracebacks.

    Keys no SigV4 service could accept raise :class:`~msd_async.CredentialsError` here,
    before anything is sent: an empty key id or secret; a key id with white space, a line
    end, a non-ASCII character, ``/`` or ``,``; a secret that starts or ends with white
    space or holds a control character; a session token with anything but printable ASCII.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    #: When temporary credentials stop working (UTC), if known.
    expiry: _dt.datetime | None = None

    def __post_init__(self) -> None:
        problem = _keys_problem(self.access_key_id, self.secret_access_key, self.session_token)
        if problem is not None:
            raise CredentialsError(problem)

    async def get_credentials(self) -> Credentials:
        """A :class:`Credentials` is its own (static) provider."""
        return self


# The access key id and the token travel in headers, the id inside "Credential=<id>/<scope>,":
# white space, a line end, a non-ASCII character, '/' or ',' there cannot be signed for.
_BAD_KEY_ID_CHAR: Final = re.compile(r"[^!-~]|[/,]")
_BAD_TOKEN_CHAR: Final = re.compile(r"[^!-~]")


def _keys_problem(key_id: object, secret: object, token: object) -> str | None:
    """What makes these keys unusable for any SigV4 service, or ``None``. Only what cannot
    work is refused (keys of other shapes are issued by compatible servers); the secret and
    token are never echoed."""
    if not isinstance(key_id, str) or not isinstance(secret, str):
        return (
            "the access key id and secret access key must be str, not "
            f"{type(key_id).__name__} and {type(secret).__name__}"
        )
    if not key_id:
        return "the access key id is empty; give the AWS access key id (AKIA... or ASIA...)"
    bad = _BAD_KEY_ID_CHAR.search(key_id)
    if bad is not None:
        return (
            f"the access key id {key_id!r} holds {bad.group()!r}, which no access key id "
            "has (copied with a space or a line end?); give it exactly as issued"
        )
    if not secret:
        return "the secret access key is empty; give the AWS secret access key"
    if secret != secret.strip():
        return (
            "the secret access key starts or ends with white space (copied with a space or "
            "a line end?); give it exactly as issued"
        )
    if not secret.isprintable():
        return (
            "the secret access key holds a control character; give it exactly as issued"
        )
    if token is not None:
        if not isinstance(token, str):
            return f"the session token must be str or None, not {type(token).__name__}"
        bad = _BAD_TOKEN_CHAR.search(token)
        if bad is not None:
            what = "white space" if bad.group().isspace() else (
                "a character that is not printable ASCII"
            )
            return (
                f"the session token holds {what} (copied with a line end?); give it "
                "exactly as issued"
            )
    return None


@runtime_checkable
class CredentialsProvider(Protocol):
    """Source of credentials; called before each request is signed, so it must be cheap
    when nothing needs refreshing."""

    async def get_credentials(self) -> Credentials: ...


# --- environment variables ---------------------------------------------------------------

ENV_ACCESS_KEY: Final = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY: Final = "AWS_SECRET_ACCESS_KEY"
#: Checked in this order; ``AWS_SECURITY_TOKEN`` is the legacy name botocore still honours.
ENV_TOKENS: Final = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
ENV_EXPIRATION: Final = "AWS_CREDENTIAL_EXPIRATION"


class EnvironmentCredentials:
    """Credentials from the standard AWS environment variables.

    ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` are required; the session token comes
    from ``AWS_SESSION_TOKEN``, else ``AWS_SECURITY_TOKEN``; ``AWS_CREDENTIAL_EXPIRATION``
    (ISO 8601), if set, fills :attr:`Credentials.expiry`. Empty values count as unset, as in
    botocore.

    The variables are read on every call (a few dict lookups), so keys rotated by updating
    ``os.environ`` are picked up without a restart. ``environ`` replaces ``os.environ``
    (for tests). Raises :class:`~msd_async.CredentialsError` when a required variable is
    missing, the expiration cannot be parsed, or it has passed (nothing is signed with keys
    known to be expired).
    """

    __slots__ = ("_cached", "_environ")

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._cached: tuple[tuple[str, str, str | None, str], Credentials] | None = None

    def __repr__(self) -> str:
        return "EnvironmentCredentials()"

    async def get_credentials(self) -> Credentials:
        env = self._environ
        access_key = env.get(ENV_ACCESS_KEY, "")
        secret_key = env.get(ENV_SECRET_KEY, "")
        token: str | None = None
        for name in ENV_TOKENS:
            token = env.get(name) or None
            if token:
                break
        expiration = env.get(ENV_EXPIRATION, "")
        state = (access_key, secret_key, token, expiration)
        cached = self._cached
        if cached is not None and cached[0] == state:
            creds = cached[1]
            if creds.expiry is not None:
                _check_not_expired(creds.expiry)
            return creds
        missing = [
            name
            for name, v in ((ENV_ACCESS_KEY, access_key), (ENV_SECRET_KEY, secret_key))
            if not v
        ]
        if missing:
            raise CredentialsError(
                f"environment variable(s) {', '.join(missing)} not set; set both "
                f"{ENV_ACCESS_KEY} and {ENV_SECRET_KEY} (and AWS_SESSION_TOKEN for temporary "
                "credentials), or pass credentials explicitly"
            )
        expiry = _parse_expiration(expiration) if expiration else None
        try:
            creds = Credentials(access_key, secret_key, token, expiry)
        except CredentialsError as exc:
            raise CredentialsError(
                f"the credentials in the environment ({ENV_ACCESS_KEY}, {ENV_SECRET_KEY}, "
                f"AWS_SESSION_TOKEN) cannot be used: {exc}"
            ) from None
        self._cached = (state, creds)
        if expiry is not None:
            _check_not_expired(expiry)
        return creds


def _check_not_expired(expiry: _dt.datetime) -> None:
    # As botocore refuses environment credentials still expired after a refresh: signed
    # with them, a request fails as an auth error whose advice (check the keys) misleads.
    if expiry <= _dt.datetime.now(_dt.UTC):
        raise CredentialsError(
            f"the credentials in the environment expired at {expiry.isoformat()} "
            f"({ENV_EXPIRATION}); get new temporary credentials and set "
            f"{ENV_ACCESS_KEY}, {ENV_SECRET_KEY}, AWS_SESSION_TOKEN and {ENV_EXPIRATION} "
            "again (or unset them to use a profile)"
        )


def _parse_expiration(value: str) -> _dt.datetime:
    try:
        parsed = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise CredentialsError(
            f"{ENV_EXPIRATION}={value!r} is not an ISO 8601 time (for example 2030-01-01T00:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.UTC)
    return parsed.astimezone(_dt.UTC)


# --- the full AWS chain, through aiobotocore ---------------------------------------------------

_NOT_FOUND_HELP: Final = (
    "Tried, in order: the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), "
    "assume-role and web identity settings, SSO, the shared credentials file "
    "(AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials), the config file "
    "(AWS_CONFIG_FILE, default ~/.aws/config, including credential_process), the container "
    "credentials endpoint (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI) and EC2 instance "
    "metadata. Fix it by passing credentials=Credentials(...), setting the environment "
    "variables, choosing a configured profile (AWS_PROFILE or profile=...), or running "
    "'aws configure' / 'aws sso login'."
)


class AwsChainCredentials:
    """Credentials from the standard AWS chain, resolved by aiobotocore.

    The chain (environment, shared config and credentials files and their profiles, SSO,
    assume-role, ``credential_process``, container endpoint, EC2 instance metadata) is
    searched once, on the first call; aiobotocore is imported only then, so importing
    msd_async stays light. Every later call asks the resolved credentials for a frozen copy,
    which costs nothing while they are fresh. Temporary credentials are refreshed
    asynchronously by aiobotocore: in the background window (15 minutes before expiry) a
    failed refresh keeps the current keys; inside the mandatory window (10 minutes) it raises.

    ``profile`` names the profile to use (default: ``AWS_PROFILE``, else ``default``).

    Raises :class:`~msd_async.CredentialsError` when no source has credentials, the profile
    does not exist, or a refresh fails; the original error is chained as ``__cause__``.
    """

    __slots__ = ("_last", "_lock", "_profile", "_session", "_source")

    def __init__(self, profile: str | None = None) -> None:
        self._profile = profile
        # Both are aiobotocore objects; typed Any so that nothing here imports aiobotocore.
        self._session: Any = None
        self._source: Any = None
        self._last: tuple[Any, Credentials] | None = None
        self._lock = asyncio.Lock()

    @property
    def profile(self) -> str | None:
        return self._profile

    @property
    def method(self) -> str | None:
        """Where the credentials came from (aiobotocore's name, e.g. ``"env"``,
        ``"shared-credentials-file"``, ``"custom-process"``), or ``None`` before the first
        call."""
        return None if self._source is None else str(self._source.method)

    def __repr__(self) -> str:
        return f"AwsChainCredentials(profile={self._profile!r}, method={self.method!r})"

    async def get_credentials(self) -> Credentials:
        source = self._source
        if source is None:
            source = await self._resolve()
        try:
            frozen = await source.get_frozen_credentials()
        except Exception as exc:
            raise CredentialsError(
                f"refreshing the AWS credentials from {source.method!r} failed "
                f"({type(exc).__name__}: {_safe_message(exc)}) and the keys in hand expire "
                "within minutes or have expired; fix that source (the credential_process, "
                "'aws sso login', the instance or container role); the next call tries again"
            ) from exc
        last = self._last
        # Refreshable credentials hand out the same frozen tuple until they refresh; static
        # ones build an equal tuple each time. Either way, reuse the Credentials we built.
        if last is not None and (last[0] is frozen or last[0] == frozen):
            return last[1]
        try:
            creds = Credentials(
                frozen.access_key, frozen.secret_key, frozen.token or None, _expiry_of(source)
            )
        except CredentialsError as exc:
            raise CredentialsError(
                f"the AWS credentials from {source.method!r} cannot be used: {exc}"
            ) from None
        self._last = (frozen, creds)
        return creds

    async def _resolve(self) -> Any:
        async with self._lock:
            if self._source is not None:
                return self._source
            # Imported here, on first use: aiobotocore pulls in botocore (~100 ms, ~30 MB).
            import botocore.exceptions
            from aiobotocore.session import AioSession

            where = f"profile {self._profile!r}" if self._profile else "the default profile"
            try:
                session = AioSession(profile=self._profile)
                _end_abandoned_processes(session)
                source = await session.get_credentials()
            except botocore.exceptions.ProfileNotFound as exc:
                raise CredentialsError(
                    f"AWS profile {self._profile!r} not found in the config or credentials "
                    "file (AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/); "
                    "check its name or run 'aws configure --profile NAME'"
                ) from exc
            except Exception as exc:
                raise CredentialsError(
                    f"loading AWS credentials for {where} failed "
                    f"({type(exc).__name__}: {_safe_message(exc)})"
                ) from exc
            if source is None:
                raise CredentialsError(f"no AWS credentials found for {where}. {_NOT_FOUND_HELP}")
            self._session = session
            self._source = source
            return source

    async def aclose(self) -> None:
        """Forget the resolved credentials; the next call searches the chain again.

        aiobotocore keeps no connection open between refreshes, so there is nothing else to
        release; this exists so a session can close every provider the same way. Idempotent.
        """
        self._session = None
        self._source = None
        self._last = None


def _end_abandoned_processes(session: Any) -> None:
    """Make the chain's ``credential_process`` end when its caller stops waiting for it.

    aiobotocore awaits the process's output and nothing more: when Timeouts.credentials,
    a deadline or a cancellation ends that wait, the process (waiting for an MFA code, a
    browser login) ran on, and every later call started one more. Its provider takes the
    function that starts the process (``_popen``, as botocore's does); the one given here
    ends it instead. That is the chain's own process provider, and those the assume-role
    provider makes for a ``source_profile`` with a ``credential_process`` (through its
    ``_profile_provider_builder``, while it loads).
    """
    from aiobotocore.credentials import AioAssumeRoleProvider, AioProcessProvider

    def ended_when_abandoned(provider: Any) -> None:
        if type(provider) is AioProcessProvider:
            provider._popen = _start_process_ended_when_abandoned

    resolver = session.get_component("credential_provider")
    for provider in getattr(resolver, "providers", ()):
        ended_when_abandoned(provider)
        builder = getattr(provider, "_profile_provider_builder", None)
        if type(provider) is AioAssumeRoleProvider and builder is not None:
            make = builder._create_process_provider

            def make_ended(profile_name: str, make: Any = make) -> Any:
                made = make(profile_name)
                ended_when_abandoned(made)
                return made

            # On this session's builder only, which has made the chain's providers already.
            builder._create_process_provider = make_ended


async def _start_process_ended_when_abandoned(*args: Any, **kwargs: Any) -> _EndedWhenAbandoned:
    return _EndedWhenAbandoned(await asyncio.create_subprocess_exec(*args, **kwargs))


class _EndedWhenAbandoned:
    """An asyncio process whose ``communicate()``, if abandoned, kills and reaps it."""

    __slots__ = ("_process",)

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def communicate(self, input: bytes | None = None) -> tuple[bytes, bytes]:
        process = self._process
        try:
            return await process.communicate(input)
        except BaseException:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                # Reaped here, or the loop's transport warns that it is still running (and
                # the child watcher, if the loop closes first). A killed process ends at
                # once, but the caller's cancellation may be delivered again and again
                # meanwhile (an anyio cancel scope re-cancels every loop iteration): none
                # of those stops the reaping, and the first one goes on either way.
                reaped = asyncio.ensure_future(process.wait())
                while not reaped.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(reaped)
            raise


def _expiry_of(source: Any) -> _dt.datetime | None:
    # botocore keeps the expiry of refreshable credentials only in a private attribute.
    expiry = getattr(source, "_expiry_time", None)
    return expiry.astimezone(_dt.UTC) if isinstance(expiry, _dt.datetime) else None


def _safe_message(exc: BaseException) -> str:
    # botocore's credential errors name variables, files and providers, never key material;
    # cap the length so a chatty credential_process cannot flood a log line.
    text = " ".join(str(exc).split())  # a process's stderr ends with a line end
    return text if len(text) <= 500 else text[:500] + "..."


def resolve_credentials(
    credentials: Credentials | CredentialsProvider | None = None,
    *,
    profile: str | None = None,
) -> CredentialsProvider:
    """Choose the credentials provider for a session.

    1. ``credentials`` if given (static :class:`Credentials` or any provider);
    2. else, with no ``profile`` and ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` set,
       :class:`EnvironmentCredentials` (aiobotocore is not imported);
    3. else :class:`AwsChainCredentials` for ``profile``.

    Never raises for missing credentials: the provider raises
    :class:`~msd_async.CredentialsError` when first asked. Raises :class:`TypeError` when
    ``credentials`` is not a provider.
    """
    if credentials is not None:
        if not isinstance(credentials, CredentialsProvider):
            raise TypeError(
                "credentials must be a Credentials or have 'async def get_credentials()', "
                f"not {type(credentials).__name__}"
            )
        return credentials
    if profile is None and os.environ.get(ENV_ACCESS_KEY) and os.environ.get(ENV_SECRET_KEY):
        return EnvironmentCredentials()
    return AwsChainCredentials(profile)


# --- region -----------------------------------------------------------------------------

# A container endpoint: <id>.data.mediastore.<region>.amazonaws.com[.cn] (docs/contract.md,
# "Endpoint and identity").
_ENDPOINT_HOST_RE: Final = re.compile(
    r"[a-z0-9-]+\.data\.mediastore\.([a-z]{2}(?:-[a-z0-9]+)+-\d+)\.amazonaws\.com(?:\.cn)?"
)
_REGION_RE: Final = re.compile(r"[A-Za-z0-9-]{1,64}")
ENV_REGIONS: Final = ("AWS_REGION", "AWS_DEFAULT_REGION")


def without_user_info(endpoint: object) -> object:
    """``endpoint`` with a ``user:password@`` part replaced by ``***@``, for messages:
    secrets stay out of error messages."""
    if not isinstance(endpoint, str):
        return endpoint
    return _USER_INFO_RE.sub(r"\1***@", endpoint, count=1)


_USER_INFO_RE: Final = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//|)[^/?#]*@")


def resolve_region(region: str | None, endpoint: str) -> str:
    """The signing region for ``endpoint``.

    1. ``region`` if given;
    2. else the region in a container host ``<id>.data.mediastore.<region>.amazonaws.com``
       (or ``.amazonaws.com.cn``);
    3. else ``AWS_REGION``, then ``AWS_DEFAULT_REGION`` (empty counts as unset).

    Raises :class:`~msd_async.InvalidParameterError` (``rule="region.required"``) when none
    applies (a local or proxy endpoint without a configured region), and
    ``rule="region.invalid"`` for a region, given or from the environment, that is not
    letters, digits and dashes.
    """
    if region is not None:
        if not isinstance(region, str) or _REGION_RE.fullmatch(region) is None:
            raise InvalidParameterError(
                f"region {region!r} is not a region name such as 'us-east-1'",
                rule="region.invalid",
            )
        return region
    try:
        host = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname
    except ValueError:
        host = None
    if host:
        match = _ENDPOINT_HOST_RE.fullmatch(host)
        if match is not None:
            return match.group(1)
    for name in ENV_REGIONS:
        value = os.environ.get(name)
        if value:
            if _REGION_RE.fullmatch(value) is None:
                # Signed with it, every request would fail as a bad signature, and the
                # advice would be to check the keys.
                raise InvalidParameterError(
                    f"{name}={value!r} is not a region name such as 'us-east-1'; fix or "
                    f"unset {name}",
                    rule="region.invalid",
                )
            return value
    raise InvalidParameterError(
        f"cannot tell the AWS region of endpoint {without_user_info(endpoint)!r}: pass "
        "region='us-east-1' (or the container's region), set AWS_REGION, or use the "
        "container's own endpoint https://<id>.data.mediastore.<region>.amazonaws.com",
        rule="region.required",
    )
