"""AWS Signature Version 4 for the MediaStore data plane (docs/contract.md, "Signing").
Pure: no I/O, no clock reads except where a timestamp is not given.

The client signs with :class:`SigV4Signer`; the local server verifies with the same canonical
building blocks (:func:`canonical_uri`, :func:`canonical_query`, :func:`canonical_request`,
:func:`string_to_sign`), and tests prove both byte-identical to botocore's ``SigV4Auth``.

The signing key depends only on secret, date, region and service, so it is derived once per
day and cached; a signature then costs two SHA-256 of short strings and one HMAC.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, TypeAlias
from urllib.parse import quote, urlsplit

from .credentials import Credentials
from .errors import InvalidParameterError

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "UNSIGNED_PAYLOAD",
    "SigV4Signer",
    "amz_date",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "derive_signing_key",
    "signing_host",
    "string_to_sign",
]

ALGORITHM: Final = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD: Final = "UNSIGNED-PAYLOAD"
EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
SERVICE: Final = "mediastore"
#: Presigned URLs may live at most 7 days (SigV4 rule).
MAX_PRESIGN_EXPIRES: Final = 7 * 24 * 3600


def check_expires_in(expires_in: object) -> int:
    """``expires_in`` if it is a presigned URL's lifetime SigV4 accepts; else
    :class:`~msd_async.InvalidParameterError`."""
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not 1 <= expires_in <= MAX_PRESIGN_EXPIRES
    ):
        raise InvalidParameterError(
            f"expires_in must be a whole number of seconds from 1 to "
            f"{MAX_PRESIGN_EXPIRES} (7 days, the SigV4 maximum), not {expires_in!r}",
            rule="presign.expires-in",
        )
    return expires_in


_sha256 = hashlib.sha256
_hmac_digest = hmac.digest


_AMZ_DATE_FORMAT: Final = "%Y%m%dT%H%M%SZ"
# (whole second, its X-Amz-Date): formatting a date costs more than the rest of a signature's
# string work, and it changes once a second. One tuple, so threads see a consistent pair.
_last_amz_date: tuple[int, str] = (-1, "")


def amz_date(now: _dt.datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` for ``now`` (UTC; default: the current time), the format of
    ``X-Amz-Date``. A naive ``now`` is taken as UTC."""
    global _last_amz_date
    if now is None:
        second = int(time.time())
        cached = _last_amz_date
        if cached[0] == second:
            return cached[1]
        value = time.strftime(_AMZ_DATE_FORMAT, time.gmtime(second))
        _last_amz_date = (second, value)
        return value
    if now.tzinfo is not None:
        now = now.astimezone(_dt.UTC)
    return now.strftime(_AMZ_DATE_FORMAT)


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# A path of only these characters is its own canonical URI: quoting would change nothing.
_canonical_as_is = re.compile(r"[A-Za-z0-9_.\-~/]*").fullmatch


def signing_host(url: str) -> str:
    """The ``host`` header value to sign for ``url``, as botocore derives it and aiohttp
    sends it: the host name in lower case, an IPv6 address in brackets, no user info, and
    the port only when it is not the scheme's default (80 for http, 443 for https).

    Raises :class:`ValueError` for a URL whose port is not a number.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return host


def canonical_uri(encoded_path: str) -> str:
    """The canonical URI of an already percent-encoded path, exactly as botocore builds it.

    Empty and ``.`` segments are removed, ``..`` pops one, and the result is percent-encoded
    *again* (``%3D`` becomes ``%253D``): the service and botocore both double-encode.
    """
    if not encoded_path:
        return "/"
    if encoded_path[0] == "/" and "//" not in encoded_path and "/." not in encoded_path:
        # The common case: no empty or dot segment, so normalising would change nothing;
        # and usually no '%' either (nor anything else to quote), so quoting would not.
        if _canonical_as_is(encoded_path) is not None:
            return encoded_path
        return quote(encoded_path, safe="/~")
    segments: list[str] = []
    for segment in encoded_path.split("/"):
        if segment and segment != ".":
            if segment == "..":
                if segments:
                    segments.pop()
            else:
                segments.append(segment)
    first = "/" if encoded_path[0] == "/" else ""
    last = "/" if encoded_path[-1] == "/" and segments else ""
    return quote(first + "/".join(segments) + last, safe="/~")


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Canonical query string from *decoded* key/value pairs: encoded with ``-_.~`` safe,
    sorted by key then value."""
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """``(canonical_headers_block, signed_headers)`` for lower-case ``name -> value`` pairs.

    Values are trimmed and inner runs of white space folded to one space, as SigV4 requires.
    The block ends with a newline, as it stands in the canonical request.
    """
    names = sorted(headers)
    lines = []
    for name in names:
        value = headers[name]
        # A printable value without a space has no white space to fold (str.split's white
        # space is ASCII space or non-printable): most values, skipped cheaply.
        if " " in value or not value.isprintable():
            value = " ".join(value.split())
        lines.append(f"{name}:{value}\n")
    return "".join(lines), ";".join(names)


def canonical_request(
    method: str,
    uri: str,
    query: str,
    headers_block: str,
    signed_headers: str,
    payload_hash: str,
) -> str:
    return f"{method}\n{uri}\n{query}\n{headers_block}\n{signed_headers}\n{payload_hash}"


def string_to_sign(timestamp: str, scope: str, canonical: str) -> str:
    digest = _sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{digest}"


def derive_signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 signing key for one day (``date`` is ``YYYYMMDD``)."""
    key = _hmac_digest(f"AWS4{secret}".encode(), date.encode(), "sha256")
    key = _hmac_digest(key, region.encode(), "sha256")
    key = _hmac_digest(key, service.encode(), "sha256")
    return _hmac_digest(key, b"aws4_request", "sha256")


_Pads: TypeAlias = "tuple[hashlib._Hash, hashlib._Hash]"


def _pads(key: bytes) -> _Pads:
    """The inner and outer SHA-256 states of an HMAC keyed with ``key`` (<= 64 bytes)."""
    block = key.ljust(64, b"\0")
    return (
        _sha256(block.translate(_IPAD)),
        _sha256(block.translate(_OPAD)),
    )


def _hmac_hex(pads: _Pads, message: bytes) -> str:
    """HMAC-SHA256 of ``message`` (hex), from :func:`_pads`."""
    inner = pads[0].copy()
    inner.update(message)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.hexdigest()


_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))


class SigV4Signer:
    """Signs MediaStore requests for one region.

    Signing keys are cached per (secret, day): a long-running session keeps one or two.
    Each comes with the two SHA-256 states of its HMAC (RFC 2104: the key padded and
    XORed with ``ipad`` and with ``opad``, already hashed), ready to copy, and with the
    day's credential scope. Copying two hash states is what ``hmac.HMAC.copy`` does too,
    without its Python-level wrapper objects (a third of a signature's cost).
    """

    __slots__ = ("_keys", "region", "service")

    def __init__(self, region: str, service: str = SERVICE) -> None:
        self.region = region
        self.service = service
        self._keys: dict[tuple[str, str], tuple[bytes, _Pads, str]] = {}

    def _signing_entry(self, secret: str, date: str) -> tuple[bytes, _Pads, str]:
        """``(signing key, its HMAC pads, credential scope)`` for ``secret`` on ``date``."""
        cache_key = (secret, date)
        entry = self._keys.get(cache_key)
        if entry is None:
            if len(self._keys) >= 8:
                # Keys change daily or on rotation: dropping all is simpler than an LRU and
                # costs four HMACs once.
                self._keys.clear()
            key = derive_signing_key(secret, date, self.region, self.service)
            entry = self._keys[cache_key] = (key, _pads(key), self.scope(date))
        return entry

    def signing_key(self, secret: str, date: str) -> bytes:
        """The (cached) signing key for ``secret`` on ``date`` (``YYYYMMDD``)."""
        return self._signing_entry(secret, date)[0]

    def _signature(self, secret: str, date: str, to_sign: str) -> str:
        return _hmac_hex(self._signing_entry(secret, date)[1], to_sign.encode())

    def scope(self, date: str) -> str:
        return f"{date}/{self.region}/{self.service}/aws4_request"

    def sign(
        self,
        credentials: Credentials,
        *,
        method: str,
        host: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        payload_hash: str = EMPTY_SHA256,
        timestamp: str | None = None,
    ) -> dict[str, str]:
        """Sign one request; return the headers to add to it.

        ``path`` is the percent-encoded request path as sent on the wire; ``query`` the
        decoded query pairs; ``headers`` the lower-case headers to sign besides ``host``,
        ``x-amz-date`` and ``x-amz-security-token`` (never ``content-length``,
        ``transfer-encoding`` or ``user-agent``). For an unsigned payload pass
        ``payload_hash=UNSIGNED_PAYLOAD`` and include ``x-amz-content-sha256`` in
        ``headers``, as botocore does.

        Returns ``X-Amz-Date``, ``Authorization`` and, for temporary credentials,
        ``X-Amz-Security-Token``.
        """
        if timestamp is None:
            timestamp = amz_date()
        to_sign = dict(headers) if headers else {}
        to_sign["host"] = host
        to_sign["x-amz-date"] = timestamp
        out = {"X-Amz-Date": timestamp}
        token = credentials.session_token
        if token:
            to_sign["x-amz-security-token"] = token
            out["X-Amz-Security-Token"] = token
        block, signed = canonical_headers(to_sign)
        creq = canonical_request(
            method,
            canonical_uri(path),
            canonical_query(query) if query else "",
            block,
            signed,
            payload_hash,
        )
        _, pads, scope = self._signing_entry(credentials.secret_access_key, timestamp[:8])
        signature = _hmac_hex(pads, string_to_sign(timestamp, scope, creq).encode())
        out["Authorization"] = (
            f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return out

    def presign(
        self,
        credentials: Credentials,
        *,
        method: str,
        host: str,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        expires_in: int = 3600,
        timestamp: str | None = None,
    ) -> str:
        """Return the query string (without ``?``) of a presigned URL.

        The payload is ``UNSIGNED-PAYLOAD``, so a presigned PUT accepts any body. ``headers``
        are extra lower-case headers the user of the URL must send with these exact values
        (for example ``content-type``).
        """
        check_expires_in(expires_in)
        if timestamp is None:
            timestamp = amz_date()
        to_sign = dict(headers) if headers else {}
        to_sign["host"] = host
        block, signed = canonical_headers(to_sign)
        date = timestamp[:8]
        scope = self.scope(date)
        params = [
            *query,
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{credentials.access_key_id}/{scope}"),
            ("X-Amz-Date", timestamp),
            ("X-Amz-Expires", str(expires_in)),
            ("X-Amz-SignedHeaders", signed),
        ]
        if credentials.session_token:
            params.append(("X-Amz-Security-Token", credentials.session_token))
        cq = canonical_query(params)
        creq = canonical_request(method, canonical_uri(path), cq, block, signed, UNSIGNED_PAYLOAD)
        sts = string_to_sign(timestamp, scope, creq)
        signature = self._signature(credentials.secret_access_key, date, sts)
        return f"{cq}&X-Amz-Signature={signature}"
