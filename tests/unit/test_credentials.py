"""Credentials providers, the provider choice and the region rules.

Everything stays on this machine: HOME and the AWS config files point into tmp_path, and
instance metadata and container endpoints are disabled, so aiobotocore's chain can only find
what a test wrote.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from msd_async import Credentials, CredentialsError, CredentialsProvider, InvalidParameterError
from msd_async.credentials import (
    AwsChainCredentials,
    EnvironmentCredentials,
    resolve_credentials,
    resolve_region,
)

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLETOKENxyzzy"


def assert_no_secret(*objects: object) -> None:
    for obj in objects:
        for text in (repr(obj), str(obj)):
            assert SECRET not in text
            assert TOKEN not in text


# --- static and environment ---------------------------------------------------------------


@pytest.mark.anyio
async def test_static_credentials_are_their_own_provider() -> None:
    creds = Credentials("AKIDSTATIC", SECRET, TOKEN)
    assert isinstance(creds, CredentialsProvider)
    assert await creds.get_credentials() is creds
    assert "AKIDSTATIC" in repr(creds)
    assert_no_secret(creds)


@pytest.mark.anyio
async def test_environment_credentials(aws_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    provider = EnvironmentCredentials()
    first = await provider.get_credentials()
    assert first == Credentials("AKIDENV", SECRET, None)
    # Unchanged environment: the same object, no rebuilding per signature.
    assert await provider.get_credentials() is first

    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", "2030-01-02T03:04:05Z")
    rotated = await provider.get_credentials()
    assert rotated.session_token == TOKEN
    assert rotated.expiry == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert_no_secret(provider, first, rotated)


@pytest.mark.anyio
async def test_environment_security_token_fallback(
    aws_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SECURITY_TOKEN": "T1"}
    assert (await EnvironmentCredentials(env).get_credentials()).session_token == "T1"
    # AWS_SESSION_TOKEN wins over the legacy name; an empty one counts as unset.
    env["AWS_SESSION_TOKEN"] = "T2"
    assert (await EnvironmentCredentials(env).get_credentials()).session_token == "T2"
    env["AWS_SESSION_TOKEN"] = ""
    assert (await EnvironmentCredentials(env).get_credentials()).session_token == "T1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": "AK"}, "AWS_SECRET_ACCESS_KEY"),
        ({"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}, "AWS_ACCESS_KEY_ID"),
        ({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": SECRET}, "AWS_ACCESS_KEY_ID"),
    ],
)
async def test_environment_missing(env: dict[str, str], missing: str) -> None:
    with pytest.raises(CredentialsError) as info:
        await EnvironmentCredentials(env).get_credentials()
    assert f"variable(s) {missing} not set" in str(info.value)
    assert_no_secret(info.value)


@pytest.mark.anyio
async def test_environment_bad_expiration() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_CREDENTIAL_EXPIRATION": "tomorrow",
    }
    with pytest.raises(CredentialsError, match="AWS_CREDENTIAL_EXPIRATION") as info:
        await EnvironmentCredentials(env).get_credentials()
    assert info.value.__cause__ is None
    assert_no_secret(info.value)


@pytest.mark.anyio
async def test_environment_credentials_past_their_expiration_are_refused() -> None:
    """They were handed out and signed with: the service's 403 then sent the user to check
    the keys. botocore refuses them too."""
    env = {
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_CREDENTIAL_EXPIRATION": "2000-01-01T00:00:00Z",
    }
    provider = EnvironmentCredentials(env)
    with pytest.raises(CredentialsError, match="expired at 2000-01-01T00:00:00") as info:
        await provider.get_credentials()
    assert "AWS_CREDENTIAL_EXPIRATION" in str(info.value)
    assert "new temporary credentials" in str(info.value)
    assert_no_secret(info.value)
    # Unexpired ones pass; and the same (cached) credentials are refused once they expire.
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
    env["AWS_CREDENTIAL_EXPIRATION"] = soon.isoformat()
    assert (await provider.get_credentials()).expiry == soon
    await anyio.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 0.05)
    with pytest.raises(CredentialsError, match="expired"):
        await provider.get_credentials()


# --- the aiobotocore chain ------------------------------------------------------------------


@pytest.mark.anyio
async def test_chain_reads_profiles(aws_home: Path) -> None:
    (aws_home / "credentials").write_text(
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = other\n\n"
        f"[media]\naws_access_key_id = AKIDMEDIA\naws_secret_access_key = {SECRET}\n"
        f"aws_session_token = {TOKEN}\n"
    )
    default = AwsChainCredentials()
    assert (await default.get_credentials()).access_key_id == "AKIDDEFAULT"

    media = AwsChainCredentials("media")
    creds = await media.get_credentials()
    assert creds == Credentials("AKIDMEDIA", SECRET, TOKEN)
    assert media.method == "shared-credentials-file"
    # Static chain credentials are not rebuilt per call.
    assert await media.get_credentials() is creds
    assert_no_secret(media, creds)
    await media.aclose()
    await media.aclose()
    assert media.method is None
    await default.aclose()


@pytest.mark.anyio
async def test_chain_profile_from_config_file(aws_home: Path) -> None:
    (aws_home / "config").write_text(
        f"[profile cfg]\naws_access_key_id = AKIDCFG\naws_secret_access_key = {SECRET}\n"
    )
    provider = AwsChainCredentials("cfg")
    assert (await provider.get_credentials()).access_key_id == "AKIDCFG"
    assert provider.method == "config-file"


@pytest.mark.anyio
async def test_chain_missing_credentials(aws_home: Path) -> None:
    provider = AwsChainCredentials()
    with pytest.raises(CredentialsError) as info:
        await provider.get_credentials()
    message = str(info.value)
    assert "no AWS credentials found for the default profile" in message
    for hint in ("AWS_ACCESS_KEY_ID", "credential_process", "instance metadata", "Credentials("):
        assert hint in message


@pytest.mark.anyio
async def test_chain_unknown_profile(aws_home: Path) -> None:
    (aws_home / "credentials").write_text(
        f"[default]\naws_access_key_id = AK\naws_secret_access_key = {SECRET}\n"
    )
    with pytest.raises(CredentialsError, match="profile 'nope' not found") as info:
        await AwsChainCredentials("nope").get_credentials()
    assert info.value.__cause__ is not None
    assert_no_secret(info.value)


# A credential_process that hands out a new token on every run (a counter in a file) and
# an expiry EXPIRES_IN seconds ahead: the shape STS, SSO and IMDS credentials have.
_PROCESS = textwrap.dedent(
    """
    import datetime, json, pathlib, sys
    counter = pathlib.Path(sys.argv[1])
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        seconds=float(sys.argv[2]))
    print(json.dumps({
        "Version": 1,
        "AccessKeyId": f"ASIATEMP{n}",
        "SecretAccessKey": f"{SECRET}-{n}",
        "SessionToken": f"{TOKEN}-{n}",
        "Expiration": expires.isoformat(),
    }))
    """
)


def _process_profile(home: Path, expires_in: float) -> Path:
    script = home / "creds_process.py"
    script.write_text(f"SECRET = {SECRET!r}\nTOKEN = {TOKEN!r}\n{_PROCESS}")
    counter = home / "counter"
    (home / "config").write_text(
        f"[profile temp]\ncredential_process = {sys.executable} {script} {counter} {expires_in}\n"
    )
    return counter


@pytest.mark.anyio
async def test_chain_refreshes_inside_mandatory_window(aws_home: Path) -> None:
    # Credentials that expire in 5 minutes are inside botocore's 10-minute mandatory window:
    # with the default knobs every get runs the process again, asynchronously. The first
    # get already refreshes what the chain loaded (run 1), so it returns run 2.
    counter = _process_profile(aws_home, 300)
    provider = AwsChainCredentials("temp")
    first = await provider.get_credentials()
    assert provider.method == "custom-process"
    assert first.access_key_id == "ASIATEMP2"
    assert first.secret_access_key == f"{SECRET}-2"
    assert first.session_token == f"{TOKEN}-2"
    assert first.expiry is not None
    left = first.expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=4) < left <= dt.timedelta(minutes=5)
    second = await provider.get_credentials()
    assert (second.access_key_id, second.session_token) == ("ASIATEMP3", f"{TOKEN}-3")
    assert counter.read_text() == "3"
    assert_no_secret(provider, first, second)


@pytest.mark.anyio
async def test_chain_refreshes_in_advisory_window(aws_home: Path) -> None:
    # Default knobs: refresh starts 15 minutes (900 s) before expiry. Credentials valid for
    # 902 s are fresh now and enter the advisory window two seconds later.
    counter = _process_profile(aws_home, 902)
    provider = AwsChainCredentials("temp")
    first = await provider.get_credentials()
    assert first.session_token == f"{TOKEN}-1"
    assert await provider.get_credentials() is first
    assert counter.read_text() == "1"
    await anyio.sleep(2.1)
    refreshed = await provider.get_credentials()
    assert (refreshed.access_key_id, refreshed.session_token) == ("ASIATEMP2", f"{TOKEN}-2")
    assert await provider.get_credentials() is refreshed
    assert counter.read_text() == "2"


@pytest.mark.anyio
async def test_chain_refreshes_after_expiry(aws_home: Path) -> None:
    counter = _process_profile(aws_home, 1.5)
    provider = AwsChainCredentials("temp")
    # Shrink botocore's refresh windows (the _advisory/_mandatory_refresh_timeout attributes
    # of RefreshableCredentials, 15 and 10 minutes by default) so that credentials valid for
    # 1.5 s are fresh at first and the test can watch them expire.
    source = await provider._resolve()
    source._advisory_refresh_timeout = 0.5
    source._mandatory_refresh_timeout = 0.25

    first = await provider.get_credentials()
    assert first.session_token == f"{TOKEN}-1"
    assert await provider.get_credentials() is first
    assert counter.read_text() == "1"

    await anyio.sleep(1.6)  # past the Expiration the process printed
    assert first.expiry is not None and first.expiry < dt.datetime.now(dt.UTC)
    refreshed = await provider.get_credentials()
    assert refreshed.access_key_id == "ASIATEMP2"
    assert refreshed.secret_access_key == f"{SECRET}-2"
    assert refreshed.session_token == f"{TOKEN}-2"
    assert refreshed.expiry is not None and refreshed.expiry > dt.datetime.now(dt.UTC)
    assert counter.read_text() == "2"


@pytest.mark.anyio
async def test_chain_failing_process(aws_home: Path) -> None:
    (aws_home / "config").write_text(
        f'[profile broken]\ncredential_process = {sys.executable} -c "import sys; sys.exit(3)"\n'
    )
    with pytest.raises(CredentialsError, match="loading AWS credentials for profile 'broken'"):
        await AwsChainCredentials("broken").get_credentials()


# --- choosing a provider ---------------------------------------------------------------------


def test_resolve_explicit_wins(aws_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    creds = Credentials("AK", SECRET)
    assert resolve_credentials(creds) is creds
    provider = EnvironmentCredentials()
    assert resolve_credentials(provider, profile="x") is provider
    with pytest.raises(TypeError, match="get_credentials"):
        resolve_credentials("AK:SECRET")  # type: ignore[arg-type]


def test_resolve_environment_or_chain(aws_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(resolve_credentials(), AwsChainCredentials)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    assert isinstance(resolve_credentials(), AwsChainCredentials)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    assert isinstance(resolve_credentials(), EnvironmentCredentials)
    # A profile asks for the chain even when the environment has keys.
    chosen = resolve_credentials(profile="media")
    assert isinstance(chosen, AwsChainCredentials)
    assert chosen.profile == "media"


def test_import_and_environment_path_stay_off_botocore(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import asyncio, os, sys
        os.environ.update(AWS_ACCESS_KEY_ID="AK", AWS_SECRET_ACCESS_KEY="S")
        import msd_async
        from msd_async.credentials import resolve_credentials
        asyncio.run(resolve_credentials().get_credentials())
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("botocore", "aiobotocore")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# --- region ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "region"),
    [
        ("https://abc123.data.mediastore.us-east-1.amazonaws.com", "us-east-1"),
        ("https://ABC.data.mediastore.eu-west-3.amazonaws.com:443/", "eu-west-3"),
        ("abc.data.mediastore.ap-southeast-2.amazonaws.com", "ap-southeast-2"),
        ("https://xyz.data.mediastore.cn-north-1.amazonaws.com.cn", "cn-north-1"),
        ("https://xyz.data.mediastore.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
    ],
)
def test_region_from_endpoint(aws_home: Path, endpoint: str, region: str) -> None:
    assert resolve_region(None, endpoint) == region


def test_region_order(aws_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = "https://abc.data.mediastore.us-west-2.amazonaws.com"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert resolve_region("sa-east-1", host) == "sa-east-1"
    assert resolve_region(None, host) == "us-west-2"
    assert resolve_region(None, "http://127.0.0.1:9000") == "eu-central-1"
    monkeypatch.setenv("AWS_REGION", "ca-central-1")
    assert resolve_region(None, "http://127.0.0.1:9000") == "ca-central-1"
    # Not a container endpoint: the SDK's default host, a look-alike domain.
    assert resolve_region(None, "https://data.mediastore.us-east-1.amazonaws.com") == (
        "ca-central-1"
    )
    assert resolve_region(None, "https://a.data.mediastore.us-east-1.amazonaws.com.evil") == (
        "ca-central-1"
    )


def test_region_required(aws_home: Path) -> None:
    with pytest.raises(InvalidParameterError) as info:
        resolve_region(None, "http://127.0.0.1:9000")
    assert info.value.rule == "region.required"
    assert "region=" in str(info.value) and "AWS_REGION" in str(info.value)


@pytest.mark.parametrize("bad", ["", "us east 1", "us-east-1/x", "x" * 65])
def test_region_invalid(bad: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        resolve_region(bad, "http://127.0.0.1:9000")
    assert info.value.rule == "region.invalid"


@pytest.mark.parametrize("name", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_region_from_the_environment_is_checked_too(
    aws_home: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """``AWS_REGION='us east 1'`` was signed with: every request failed as a bad signature,
    and the advice was to check the keys."""
    monkeypatch.setenv(name, "us east 1")
    with pytest.raises(InvalidParameterError) as info:
        resolve_region(None, "http://127.0.0.1:9000")
    assert info.value.rule == "region.invalid"
    assert f"{name}='us east 1'" in str(info.value)
    # Empty counts as unset, as in botocore: the next source is used.
    monkeypatch.setenv("AWS_REGION", "")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert resolve_region(None, "http://127.0.0.1:9000") == "eu-west-1"
