"""``msd`` object commands at the edges of their input and environment: an endpoint URL
with user info or a malformed host, a region variable that is not a region, expired
environment credentials, ``rm --concurrency`` out of range, a folder path with a trailing
``/``, and SIGTERM mid-transfer. Each failure is one line on stderr, no traceback."""

from __future__ import annotations

import pytest
from serve_process import ServeProcess as Server
from serve_process import one_line_error


def test_an_endpoint_with_a_password_is_refused_without_printing_it(server: Server) -> None:
    """It was accepted and the password dropped silently (and handed to event hooks)."""
    host = server.endpoint.split("://", 1)[1]
    line = one_line_error(
        server.run("ls", "--endpoint", f"http://me:s3cr3t@{host}"), "ls"
    )
    assert "user info" in line and "s3cr3t" not in line and "***@" in line


def test_a_malformed_endpoint_is_one_line_without_debug_hint(server: Server) -> None:
    """urllib's ValueError came out as "ValueError: Invalid IPv6 URL (run with --debug)"."""
    line = one_line_error(server.run("ls", "--endpoint", "http://[::1"), "ls")
    assert "InvalidParameterError" in line and "https://HOST[:PORT]" in line
    assert "--debug" not in line


@pytest.mark.parametrize("name", ["AWS_REGION", "AWS_DEFAULT_REGION"])
def test_a_region_variable_that_is_not_a_region_names_the_variable(
    server: Server, name: str
) -> None:
    """It was signed with; the service's 403 then said to check the keys."""
    env = {"AWS_REGION": "", name: "us east 1"}
    line = one_line_error(server.run("ls", env=env), "ls")
    assert f"{name}='us east 1'" in line
    assert "AWS_SECRET_ACCESS_KEY" not in line


def test_expired_environment_credentials_say_so(server: Server) -> None:
    env = {"AWS_SESSION_TOKEN": "token", "AWS_CREDENTIAL_EXPIRATION": "2000-01-01T00:00:00Z"}
    line = one_line_error(server.run("ls", env=env), "ls")
    assert "CredentialsError" in line and "expired at 2000-01-01" in line
