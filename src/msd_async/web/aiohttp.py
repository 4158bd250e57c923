"""aiohttp.web adapter: serve an object, accept an upload, from inside a handler::

    from msd_async.web.aiohttp import accept_upload, serve_object

    async def get_video(request: web.Request) -> web.StreamResponse:
        return await serve_object(request, store, "vod/" + request.match_info["name"])

    async def put_video(request: web.Request) -> web.StreamResponse:
        return await accept_upload(request, store, "vod/" + request.match_info["name"])

Route both GET and HEAD to ``serve_object`` (``app.router.add_get`` does, by default), and
give upload routes :func:`expect_handler` so an oversize upload is refused before
``100 Continue``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Final

from aiohttp import HttpVersion11, hdrs, web

from ..client import ContainerClient
from ..config import check_plain_callback, is_whole_number
from ..errors import InvalidParameterError, MediaStoreError
from .core import (
    REQUEST_HEADERS,
    SESSION_WRITE_TIMEOUT,
    Reply,
    SessionTimeout,
    UploadInterrupted,
    WriteWatch,
    _text,
    check_upload_length,
    open_object,
    store_upload,
    watch_writes,
)

__all__ = ["accept_upload", "expect_handler", "request_headers", "send_reply", "serve_object"]

logger = logging.getLogger("msd_async.web")

#: Seconds between checks that the client is still there, while the body of a growing
#: object pauses.
_WATCH_INTERVAL: Final = 0.5



def request_headers(request: web.BaseRequest) -> dict[str, str]:
    """The request headers the core reads, lower-case, repeated fields joined."""
    found: dict[str, str] = {}
    for name in REQUEST_HEADERS:
        values = request.headers.getall(name, ())
        if values:
            found[name] = ", ".join(values)
    return found


async def serve_object(
    request: web.BaseRequest,
    client: ContainerClient,
    path: str,
    *,
    redirect: bool = False,
    expires_in: int = 3600,
    write_timeout: float | SessionTimeout | None = SESSION_WRITE_TIMEOUT,
) -> web.StreamResponse:
    """Answer a GET or HEAD with the object at ``path`` (see
    :func:`msd_async.web.open_object` for ranges, conditional requests, redirects and the
    statuses). The body is streamed with back-pressure (the origin is read only as fast as
    the client takes it); when the client goes away, or takes no data for
    ``write_timeout`` seconds (default the Session's ``Timeouts.write``), its connection
    is cut and the upstream connection released at once. Returns the (already sent)
    response."""
    opening = open_object(
        client,
        path,
        method=request.method,
        headers=request_headers(request),
        redirect=redirect,
        expires_in=expires_in,
        write_timeout=write_timeout,
    )
    reply = await _unless_gone(request, opening)
    if reply is None:
        # Nothing to send it to. 499, nginx's "client closed request", as the ASGI adapter
        # says: an empty 200 showed a success nobody got in the access log.
        return web.StreamResponse(status=499)
    return await send_reply(request, reply)


async def _unless_gone(request: web.BaseRequest, opening: Awaitable[Reply]) -> Reply | None:
    """``opening``'s reply, or ``None`` if the client disconnects first: the origin
    request is then cancelled, so its connection goes back to the pool at once rather
    than when the origin answers nobody (a slow origin, a retry's backoff). aiohttp does
    not cancel a handler whose client left: the connection is checked every
    _WATCH_INTERVAL."""
    task = asyncio.ensure_future(opening)
    handed = False
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=_WATCH_INTERVAL)
            if not task.done() and not _connected(request):
                break
        if task.done() and _connected(request):
            handed = True
            return task.result()
        logger.debug("the client of %s left before the answer", request.path)
        return None
    finally:
        if not handed:  # the client left, or this handler is being cancelled
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is None:
                await task.result().aclose()  # answered just as the client left


async def send_reply(request: web.BaseRequest, reply: Reply) -> web.StreamResponse:
    """Send a :class:`~msd_async.web.Reply` and close it, whatever happens. If the origin
    fails mid-body, or the client takes no data for ``reply.write_timeout`` seconds, the
    connection is cut, so the client sees an incomplete response."""
    response = web.StreamResponse(status=reply.status)
    try:
        return await _send(request, reply, response)
    except ConnectionError:
        return response  # the client went away; the finally releases the origin
    finally:
        await reply.aclose()


async def _send(
    request: web.BaseRequest, reply: Reply, response: web.StreamResponse
) -> web.StreamResponse:
    for name, value in reply.headers:
        if name == "Content-Length":
            response.content_length = int(value)
        elif name == "Connection" and value == "close":
            response.force_close()
        else:
            response.headers.add(name, value)
    await response.prepare(request)
    if request.method != "HEAD" and reply.streamed:
        # aiohttp tells a handler that its client left only when it writes: a body of
        # unknown length (a STREAMING object still uploading) can pause for long, so
        # the connection is checked every _WATCH_INTERVAL meanwhile.
        alive = None if reply.header("Content-Length") else lambda: _connected(request)

        async def pump(watch: WriteWatch) -> None:
            # write() waits while the client's socket is backed up: the origin is read
            # no faster.
            receive, write, begin, end = reply.receive, response.write, watch.begin, watch.end
            while chunk := await receive():
                begin()
                await write(chunk)
                end()
            # The end of a chunked body is one more write (the terminating chunk), and
            # aiohttp waits there for a client that has stopped reading: under 64 KiB
            # since its last drain, the last write() did not wait.
            begin()
            await response.write_eof()
            end()

        try:
            watch = await watch_writes(
                pump, reply.write_timeout, alive=alive, interval=_WATCH_INTERVAL
            )
        except MediaStoreError as exc:
            logger.warning("origin failed mid-body (connection cut): %s", exc)
            _abort(request)
            return response
        if watch.stalled or watch.gone:
            _abort(request)
            return response
    elif request.method != "HEAD" and reply.body:
        await response.write(reply.body)
    await response.write_eof()
    return response


def _connected(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _body(request: web.BaseRequest) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except (ConnectionError, OSError) as exc:  # aiohttp sets ConnectionResetError on loss
        raise UploadInterrupted(f"the client went away: {exc}") from exc


def expect_handler(
    limit: int | Callable[[web.Request], int],
) -> Callable[[web.Request], Awaitable[web.StreamResponse | None]]:
    """An ``expect_handler`` for an upload route: a request with
    ``Expect: 100-continue`` and a ``Content-Length`` over ``limit`` (bytes, or a function
    of the request giving them) is answered ``413`` at once, instead of aiohttp's default
    ``100 Continue`` that would make the client send a body only to be refused::

        app.router.add_put("/videos/{name}", put_video,
                           expect_handler=expect_handler(store.standard_limit))

    Pass ``store.streaming_limit`` for a route that uploads with ``streaming=True``.
    Otherwise it does what aiohttp's default does: ``100 Continue``, or ``417`` for
    another expectation. Raises :class:`~msd_async.InvalidParameterError` for a ``limit``
    that is neither a whole number of bytes nor a plain function."""
    if callable(limit):
        check_plain_callback(limit, "limit", rule="web.upload-limit")
    elif not is_whole_number(limit):
        raise InvalidParameterError(
            f"limit must be a whole number of bytes or a function of the request, not "
            f"{limit!r}",
            rule="web.upload-limit",
        )

    async def handle(request: web.Request) -> web.StreamResponse | None:
        if request.version != HttpVersion11:
            return None  # HTTP/1.0 has no 100 Continue (RFC 9110 §10.1.1)
        expect = request.headers.get(hdrs.EXPECT, "")
        if expect.lower() != "100-continue":
            # Not aiohttp's HTTPExpectationFailed: every answer of these helpers says nosniff.
            return await send_reply(request, _text(417))
        maximum = limit(request) if callable(limit) else limit
        refused = check_upload_length(request_headers(request), maximum)
        if refused is not None:
            return await send_reply(request, refused)
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's default: the response has not begun
        return None

    return handle


async def accept_upload(
    request: web.BaseRequest,
    client: ContainerClient,
    path: str,
    *,
    streaming: bool = False,
    content_type: str | None = None,
    allowed_types: Collection[str] = (),
    cache_control: str | None = None,
) -> web.StreamResponse:
    """Stream the request body (``request.content``) into ``put_object`` without buffering
    it; see :func:`msd_async.web.store_upload` for limits (413), preconditions (412) and
    the answer (201/200 with the new ETag). A client that disconnects mid-body aborts the
    upload: nothing is stored. The stored Content-Type follows
    :func:`msd_async.web.stored_content_type`: ``content_type``, else the uploader's only
    if it matches ``allowed_types``, else the path's extension. Returns the (already
    sent) response."""
    reply = await store_upload(
        client,
        path,
        _body(request),
        headers=request_headers(request),
        streaming=streaming,
        content_type=content_type,
        allowed_types=allowed_types,
        cache_control=cache_control,
    )
    return await send_reply(request, reply)
