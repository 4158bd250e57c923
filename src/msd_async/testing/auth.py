"""SigV4 verification for the local server (docs/contract.md, "Signing"), on the client's
canonical functions.

Two forms are accepted: the ``Authorization`` header and presigned query strings
(``X-Amz-Signature``). The canonical request is rebuilt from the request *as received*: the raw
path (double-encoded by :func:`~msd_async.signing.canonical_uri`, which also drops empty and dot
segments), the query pairs, and exactly the headers the client listed in ``SignedHeaders``.

The payload hash is the ``x-amz-content-sha256`` header when present (``UNSIGNED-PAYLOAD`` or
a hex digest, which the server then checks against the body). Without it, a request with no
body signs the SHA-256 of ``b""``; a PUT with a body (curl without the header, botocore's
presigned PUT over http) can only be checked once the body's hash is known, so verification
returns a :class:`Deferred` check that the server runs before it commits the upload.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

from ..credentials import Credentials
from ..signing import (
    ALGORITHM,
    EMPTY_SHA256,
    MAX_PRESIGN_EXPIRES,
    SERVICE,
    UNSIGNED_PAYLOAD,
    canonical_headers,
    canonical_query,
    canonical_request,
    canonical_uri,
    derive_signing_key,
    string_to_sign,
)

__all__ = ["MAX_SKEW", "AuthFailure", "Deferred", "Verifier"]

#: Requests dated further than this from the server clock are refused (API reference,
#: CommonErrors, RequestExpired).
MAX_SKEW: Final = 15 * 60

_AUTH_RE: Final = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*"
    r"Signature=([0-9a-f]{64})\s*$"
)
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
# Exactly ISO 8601 basic form: strptime alone reads "%m%d" from single digits too.
_AMZ_DATE_RE: Final = re.compile(r"[0-9]{8}T[0-9]{6}Z")
# int() also reads "_" separators, spaces and other scripts' digits.
_ASCII_INT_RE: Final = re.compile(r"[0-9]{1,12}")
_SIGNATURE_MISMATCH: Final = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method."
)


class AuthFailure(Exception):
    """Verification failed; ``code`` is the AWS error code (all are 403)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Deferred:
    """A signature that covers the body's SHA-256; call :meth:`check` with it once known."""

    _check: Callable[[str], bool]

    def check(self, body_sha256_hex: str) -> None:
        """Raise :class:`AuthFailure` unless the signature matches this body."""
        if not self._check(body_sha256_hex):
            raise AuthFailure("InvalidSignatureException", _SIGNATURE_MISMATCH)


def _parse_amz_date(value: str) -> _dt.datetime:
    try:
        if _AMZ_DATE_RE.fullmatch(value) is None:
            raise ValueError(value)
        return _dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.UTC)
    except ValueError:
        raise AuthFailure(
            "InvalidSignatureException",
            f"X-Amz-Date {value!r} is not in the form YYYYMMDDTHHMMSSZ",
        ) from None


class Verifier:
    """Checks SigV4 signatures for one region against a set of known credentials.

    Credentials with a ``session_token`` accept only requests carrying that exact token.
    """

    def __init__(
        self,
        credentials: Iterable[Credentials],
        region: str,
        *,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self.region = region
        self._keys = {c.access_key_id: c for c in credentials}
        self._clock = clock or (lambda: _dt.datetime.now(_dt.UTC))
        self._signing_keys: dict[tuple[str, str], bytes] = {}

    def add(self, credentials: Credentials) -> None:
        self._keys[credentials.access_key_id] = credentials

    def _signing_key(self, secret: str, date: str) -> bytes:
        key = self._signing_keys.get((secret, date))
        if key is None:
            if len(self._signing_keys) > 64:
                self._signing_keys.clear()
            key = self._signing_keys[(secret, date)] = derive_signing_key(
                secret, date, self.region, SERVICE
            )
        return key

    @staticmethod
    def is_signed(headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Whether the request tries to authenticate at all."""
        return "Authorization" in headers or "X-Amz-Signature" in query

    def _credentials(self, credential: str, timestamp: str) -> tuple[Credentials, str, str]:
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise AuthFailure(
                "InvalidSignatureException",
                f"Credential {credential!r} is not <key>/<date>/<region>/<service>/aws4_request",
            )
        key_id, date, region, service, _ = parts
        creds = self._keys.get(key_id)
        if creds is None:
            raise AuthFailure(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        if region != self.region:
            raise AuthFailure(
                "InvalidSignatureException",
                f"Credential should be scoped to a valid region, not '{region}'; "
                f"this server's region is '{self.region}'.",
            )
        if service != SERVICE:
            raise AuthFailure(
                "InvalidSignatureException",
                f"Credential should be scoped to correct service: '{SERVICE}', not '{service}'.",
            )
        if date != timestamp[:8]:
            raise AuthFailure(
                "InvalidSignatureException",
                f"Credential date {date} does not match X-Amz-Date {timestamp}.",
            )
        return creds, date, f"{date}/{region}/{service}/aws4_request"

    def _check_skew(self, when: _dt.datetime, timestamp: str) -> None:
        now = self._clock()
        skew = (when - now).total_seconds()
        if abs(skew) > MAX_SKEW:
            fmt = "%Y%m%dT%H%M%SZ"
            bound = now + _dt.timedelta(seconds=MAX_SKEW if skew > 0 else -MAX_SKEW)
            relation = "later" if skew > 0 else "earlier"
            raise AuthFailure(
                "InvalidSignatureException",
                f"Signature expired: {timestamp} is now {relation} than {bound.strftime(fmt)} "
                f"({now.strftime(fmt)} {'+' if skew > 0 else '-'} 15 min.): "
                f"the clock skew is {abs(skew):.0f} s, more than the 900 s allowed. "
                "Check the client's clock.",
            )

    def _check_token(self, creds: Credentials, token: str | None) -> None:
        if (token or None) != creds.session_token:
            raise AuthFailure(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        # Compared as timestamps, as the client does: a naive expiry is local time.
        if creds.expiry is not None and self._clock().timestamp() >= creds.expiry.timestamp():
            # As the service answers temporary keys used past their Expiration.
            raise AuthFailure(
                "ExpiredTokenException", "The security token included in the request is expired"
            )

    def _matches(self, key: bytes, timestamp: str, scope: str, creq: str, sig: str) -> bool:
        sts = string_to_sign(timestamp, scope, creq)
        expected = hmac.new(key, sts.encode(), "sha256").hexdigest()
        return hmac.compare_digest(expected, sig)

    def verify(
        self,
        *,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        has_body: bool,
    ) -> tuple[Credentials, Deferred | None]:
        """Verify a signed request; return its credentials and, when the signature covers a
        body not yet read, a :class:`Deferred` check.

        ``headers`` is case-insensitive (aiohttp's ``CIMultiDictProxy``); ``query`` holds the
        decoded pairs in order. Raises :class:`AuthFailure`.
        """
        if any(k == "X-Amz-Signature" for k, _ in query):
            return self._verify_query(method, raw_path, query, headers, has_body)
        return self._verify_header(method, raw_path, query, headers, has_body)

    def _signed_block(
        self, headers: Mapping[str, str], signed: str
    ) -> tuple[str, str]:
        names = signed.split(";")
        if "host" not in names:
            raise AuthFailure(
                "InvalidSignatureException", "SignedHeaders must include 'host'."
            )
        values: dict[str, str] = {}
        for name in names:
            if name != name.lower() or not name:
                raise AuthFailure(
                    "InvalidSignatureException", f"SignedHeaders has a bad name {name!r}."
                )
            value = header_value(headers, name)
            if value is None:
                raise AuthFailure(
                    "InvalidSignatureException",
                    f"Header '{name}' is listed in SignedHeaders but was not sent.",
                )
            values[name] = value
        block, signed_out = canonical_headers(values)
        if signed_out != signed:
            raise AuthFailure(
                "InvalidSignatureException", "SignedHeaders must be sorted and unique."
            )
        return block, signed_out

    def _verify_header(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        has_body: bool,
    ) -> tuple[Credentials, Deferred | None]:
        auth = headers.get("Authorization", "")
        match = _AUTH_RE.match(auth.strip())
        if match is None:
            raise AuthFailure(
                "InvalidSignatureException",
                "Authorization header is not 'AWS4-HMAC-SHA256 Credential=..., "
                "SignedHeaders=..., Signature=<64 hex>'.",
            )
        credential, signed, signature = match.groups()
        timestamp = headers.get("X-Amz-Date")
        if timestamp is None:
            raise AuthFailure(
                "InvalidSignatureException", "X-Amz-Date is missing; it must be signed."
            )
        when = _parse_amz_date(timestamp)
        creds, date, scope = self._credentials(credential, timestamp)
        if "x-amz-date" not in signed.split(";"):
            raise AuthFailure("InvalidSignatureException", "x-amz-date must be signed.")
        self._check_skew(when, timestamp)
        self._check_token(creds, headers.get("X-Amz-Security-Token"))
        block, signed = self._signed_block(headers, signed)
        uri = canonical_uri(raw_path)
        cq = canonical_query(query)
        key = self._signing_key(creds.secret_access_key, date)

        declared = headers.get("X-Amz-Content-SHA256")
        if declared is not None or not has_body:
            payload = declared if declared is not None else EMPTY_SHA256
            creq = canonical_request(method, uri, cq, block, signed, payload)
            if not self._matches(key, timestamp, scope, creq, signature):
                raise AuthFailure("InvalidSignatureException", _SIGNATURE_MISMATCH)
            return creds, None

        def check(body_hash: str) -> bool:
            creq = canonical_request(method, uri, cq, block, signed, body_hash)
            return self._matches(key, timestamp, scope, creq, signature)

        return creds, Deferred(check)

    def _verify_query(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        has_body: bool,
    ) -> tuple[Credentials, Deferred | None]:
        params: dict[str, str] = {}
        rest: list[tuple[str, str]] = []
        for k, v in query:
            if k.startswith("X-Amz-"):
                params[k] = v
            if k != "X-Amz-Signature":
                rest.append((k, v))
        for required in (
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
        ):
            if required not in params:
                raise AuthFailure(
                    "InvalidSignatureException", f"Presigned URL lacks {required}."
                )
        if params["X-Amz-Algorithm"] != ALGORITHM:
            raise AuthFailure(
                "InvalidSignatureException", f"X-Amz-Algorithm must be {ALGORITHM}."
            )
        signature = params["X-Amz-Signature"]
        timestamp = params["X-Amz-Date"]
        when = _parse_amz_date(timestamp)
        creds, date, scope = self._credentials(params["X-Amz-Credential"], timestamp)
        text = params["X-Amz-Expires"]
        expires = int(text) if _ASCII_INT_RE.fullmatch(text) else -1
        if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
            raise AuthFailure(
                "InvalidSignatureException",
                f"X-Amz-Expires must be 1..{MAX_PRESIGN_EXPIRES} seconds.",
            )
        now = self._clock()
        if (when - now).total_seconds() > MAX_SKEW:
            self._check_skew(when, timestamp)
        if now > when + _dt.timedelta(seconds=expires):
            raise AuthFailure(
                "InvalidSignatureException",
                f"Request has expired: the URL signed at {timestamp} was valid for "
                f"{expires} s.",
            )
        self._check_token(creds, params.get("X-Amz-Security-Token"))
        block, signed = self._signed_block(headers, params["X-Amz-SignedHeaders"])
        uri = canonical_uri(raw_path)
        cq = canonical_query(rest)
        key = self._signing_key(creds.secret_access_key, date)

        # Our presigner signs UNSIGNED-PAYLOAD; botocore over http signs the hash of the
        # Params body, which for a presigned PUT can only be b"" (botocore moves any other
        # body into the query). Both stand for "any payload" in a URL (a choice).
        declared = headers.get("X-Amz-Content-SHA256")
        candidates = [declared] if declared else [UNSIGNED_PAYLOAD, EMPTY_SHA256]
        for payload in candidates:
            creq = canonical_request(method, uri, cq, block, signed, payload)
            if self._matches(key, timestamp, scope, creq, signature):
                return creds, None
        if has_body and not declared:

            def check(body_hash: str) -> bool:
                creq = canonical_request(method, uri, cq, block, signed, body_hash)
                return self._matches(key, timestamp, scope, creq, signature)

            return creds, Deferred(check)
        raise AuthFailure("InvalidSignatureException", _SIGNATURE_MISMATCH)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value as SigV4 canonicalizes it: a header sent more than once is its
    values, each trimmed, joined by ``,`` (botocore ``auth.py``, ``_header_value`` over
    ``get_all``), so no copy of a signed header goes unsigned. ``None`` when not sent."""
    getall = getattr(headers, "getall", None)
    if getall is None:
        return headers.get(name)
    found: list[str] = getall(name, [])
    if len(found) < 2:
        return found[0] if found else None
    return ",".join(" ".join(v.split()) for v in found)


def decode_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded query pairs in order, keeping blank values (``?a=&b``), as signers see them."""
    pairs: list[tuple[str, str]] = []
    if not raw_query:
        return pairs
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        # SigV4 does not treat "+" as a space; only %XX escapes are decoded.
        pairs.append((unquote(key), unquote(value)))
    return pairs


def is_hex_sha256(value: str) -> bool:
    return _HEX64_RE.fullmatch(value) is not None
