"""A signing raw aiohttp client for server tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from msd_async.credentials import Credentials
from msd_async.signing import EMPTY_SHA256, UNSIGNED_PAYLOAD, SigV4Signer
from msd_async.testing import LocalMediaStore


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    @property
    def error(self) -> str | None:
        return self.headers.get("x-amzn-ErrorType")


class Raw:
    """A raw aiohttp session that signs requests with our SigV4Signer."""

    def __init__(self, server: LocalMediaStore, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.signer = SigV4Signer(server.region)
        self.host = urlsplit(server.endpoint).netloc

    def sign(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        credentials: Credentials | None = None,
        timestamp: str | None = None,
    ) -> dict[str, str]:
        h = {k.lower(): v for k, v in (headers or {}).items()}
        payload = EMPTY_SHA256
        if method == "PUT":
            h.setdefault("x-amz-content-sha256", UNSIGNED_PAYLOAD)
            payload = h["x-amz-content-sha256"]
        out = self.signer.sign(
            credentials or self.server.credentials,
            method=method,
            host=self.host,
            path=path,
            query=list(query),
            headers=h,
            payload_hash=payload,
            timestamp=timestamp,
        )
        return {**h, **out}

    def url(self, path: str, query: Iterable[tuple[str, str]] = ()) -> URL:
        q = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
        # encoded=True: send the path exactly as given (no dot-segment removal by yarl).
        return URL(self.server.endpoint + path + (f"?{q}" if q else ""), encoded=True)

    async def call(
        self,
        method: str,
        path: str,
        *,
        data: Any = None,
        query: Iterable[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        sign: bool = True,
        extra: Mapping[str, str] | None = None,
    ) -> Reply:
        query = list(query)
        h = self.sign(method, path, query=query, headers=headers) if sign else dict(headers or {})
        h.update(extra or {})
        async with self.session.request(
            method, self.url(path, query), data=data, headers=h, skip_auto_headers=["Content-Type"]
        ) as resp:
            body = await resp.read()
            return Reply(resp.status, resp.headers, body)

    async def put(self, path: str, data: Any, **headers: str) -> Reply:
        return await self.call(
            "PUT",
            "/" + path,
            data=data,
            headers={k.replace("_", "-"): v for k, v in headers.items()},
        )

    async def get(self, path: str, **headers: str) -> Reply:
        return await self.call(
            "GET", "/" + path, headers={k.replace("_", "-"): v for k, v in headers.items()}
        )

    async def list(self, path: str | None = None, **params: str) -> Reply:
        query = [(k, v) for k, v in params.items()]
        if path is not None:
            query.append(("Path", path))
        return await self.call("GET", "/", query=query)
