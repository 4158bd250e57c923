"""ASGI adapter (Starlette, FastAPI): serve an object, accept an upload. Needs the
``msd-async[web]`` extra (Starlette); ``import msd_async.web`` alone does not import it::

    from msd_async.web.asgi import accept_upload, serve_object

    @app.api_route("/videos/{name}", methods=["GET", "HEAD"])
    async def get_video(name: str, request: Request) -> Response:
        return await serve_object(request, store, f"vod/{name}")

    @app.put("/videos/{name}")
    async def put_video(name: str, request: Request) -> Response:
        return await accept_upload(request, store, f"vod/{name}")

The object response is a :class:`starlette.responses.StreamingResponse`, so it works
wherever one does (middleware, FastAPI's ``response_class``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextvars import ContextVar
from typing import Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ..client import ContainerClient
from ..errors import MediaStoreError
from .core import (
    REQUEST_HEADERS,
    SESSION_WRITE_TIMEOUT,
    Reply,
    SessionTimeout,
    UploadInterrupted,
    WriteWatch,
    open_object,
    run_beside,
    store_upload,
    watch_writes,
)

__all__ = ["ReplyResponse", "accept_upload", "request_headers", "response_for", "serve_object"]

logger = logging.getLogger("msd_async.web")

#: What uvicorn logs (at ERROR, on its documented "uvicorn.error" logger) when an app
#: returns with its response started but not complete; it then closes the connection.
_UVICORN_INCOMPLETE: Final = "ASGI callable returned without completing response."
_ended_short: ContextVar[bool] = ContextVar("msd_async.web.asgi.ended_short", default=False)


class _EndedShortFilter(logging.Filter):
    """Drops uvicorn's note that the app did not complete a response when this adapter
    ended that response short on purpose (the reason was logged already, once): ASGI has
    no message that says "cut this connection", so ending short is how an app asks for it,
    and a viewer that stops reading, or an origin failing mid-body, is not the app's bug.
    The flag is a context variable of the request's task, so another request's note is
    never dropped; under a middleware that runs the app in a task of its own the note
    shows again."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_ended_short.get() and record.msg == _UVICORN_INCOMPLETE)


_ENDED_SHORT_FILTER: Final = _EndedShortFilter()


def _end_short() -> None:
    """Mark this request's response as ended short on purpose (see _EndedShortFilter)."""
    _ended_short.set(True)
    # Added on first use, not at import: an app that never cuts a response leaves the
    # server's logging alone. addFilter() ignores a filter already there.
    logging.getLogger("uvicorn.error").addFilter(_ENDED_SHORT_FILTER)


def request_headers(request: Request) -> dict[str, str]:
    """The request headers the core reads, lower-case, repeated fields joined."""
    found: dict[str, str] = {}
    for name in REQUEST_HEADERS:
        values = request.headers.getlist(name)
        if values:
            found[name] = ", ".join(values)
    return found


class ReplyResponse(StreamingResponse):
    """A :class:`StreamingResponse` whose body comes from the container. Whatever ends it
    (the end of the body, the client going away, an error), the upstream connection is
    released before ``__call__`` returns. Each body ``send`` has ``reply.write_timeout``
    seconds: when a client takes no data that long, ``__call__`` logs it (one INFO line)
    and returns with the body incomplete, which makes the ASGI server close the connection
    rather than pass a short body off as whole. An origin failure mid-body is logged (one
    WARNING line) and ends it the same way.

    A client that leaves is noticed under servers of every ASGI spec version: the server's
    ``http.disconnect`` is watched for on ``receive()`` all along (also while the body of a
    growing STREAMING object pauses, when there is no send to fail), and a send that
    raises ``OSError`` (which spec 2.4 allows a server to do for a closed connection) ends
    the response quietly, as a client leaving is not an error of the app."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        super().__init__(reply.chunks(), status_code=reply.status, headers=dict(reply.headers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        chunks = self.body_iterator
        gone = False
        try:

            async def write_body(watch: WriteWatch) -> None:
                async def timed_send(message: Message) -> None:
                    watch.begin()
                    await send(message)
                    watch.end()

                async def stream() -> None:
                    # Starlette's StreamingResponse watches receive() only for servers
                    # before spec 2.4, which then may not raise on a send to a client that
                    # left: a paused body would wait for the origin, for nobody.
                    await timed_send(
                        {"type": "http.response.start", "status": self.status_code,
                         "headers": self.raw_headers}
                    )
                    async for chunk in chunks:
                        await timed_send(
                            {"type": "http.response.body", "body": chunk, "more_body": True}
                        )
                    await timed_send({"type": "http.response.body", "body": b""})

                async def listen(cancel: Callable[[], object]) -> None:
                    nonlocal gone
                    # A request body (a GET may carry one) is not read by anyone else.
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    gone = True
                    cancel()

                await run_beside(listen, stream())

            watch = await watch_writes(write_body, self.reply.write_timeout)
            if watch.stalled:
                # Logged by the watch. Returning with the body incomplete makes the server
                # close the connection; an exception would do that too, with a traceback.
                _end_short()
        except MediaStoreError as exc:
            # After the headers (the body's first chunk comes after them): ending short
            # makes the server cut the connection, as a stall does.
            logger.warning("origin failed mid-body (connection cut): %s", exc)
            _end_short()
        except OSError as exc:
            # ASGI 2.4: a send (or receive) on a connection the client closed.
            gone = True
            logger.debug("the client's connection failed mid-body: %r", exc)
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()
            await self.reply.aclose()
        if gone:
            logger.debug("the client of %s left mid-body", scope.get("path"))
        if self.background is not None:
            await self.background()


def response_for(reply: Reply) -> Response:
    """The Starlette response for a :class:`~msd_async.web.Reply`: a
    :class:`ReplyResponse` when the body comes from the container, else a plain
    :class:`Response` (the reply is closed then, as there is nothing to stream)."""
    if reply.streamed:
        return ReplyResponse(reply)
    response = Response(reply.body, status_code=reply.status, headers=dict(reply.headers))
    if reply.header("Content-Length") is None:
        # Starlette counts the body it was given: b"" for a HEAD, whose Content-Length is
        # the GET's (RFC 9110 §8.6), and a growing object's GET has none to give.
        del response.headers["content-length"]
    return response


class _ClientGone(Response):
    """What :func:`serve_object` returns when the client left before the answer was
    decided: an empty 499 (nginx's "client closed request", for middleware that logs
    statuses), which the server, knowing its client gone, drops. Sending nothing at all
    made a middleware that reads the route's response back (FastAPI's
    ``@app.middleware("http")``) raise "No response returned." for each such client."""

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI 2.4: a server may raise an OSError for a send on a closed connection.
        with contextlib.suppress(OSError):
            await send({"type": "http.response.start", "status": 499, "headers": []})
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _unless_gone(request: Request, opening: Awaitable[Reply]) -> Reply | None:
    """``opening``'s reply, or ``None`` if the client disconnects first: the origin
    request is then cancelled, so its connection goes back to the pool at once rather
    than when the origin answers nobody (a slow origin, a retry's backoff)."""
    gone = False

    async def watch(cancel: Callable[[], object]) -> None:
        nonlocal gone
        # A request body (a GET may carry one) is not read by anyone else: skip it.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        cancel()

    reply = await run_beside(watch, opening)
    if gone:
        if reply is not None:  # answered just as the client left
            await reply.aclose()
        logger.debug("the client of %s left before the answer", request.url.path)
        return None
    assert reply is not None
    return reply


async def serve_object(
    request: Request,
    client: ContainerClient,
    path: str,
    *,
    redirect: bool = False,
    expires_in: int = 3600,
    write_timeout: float | SessionTimeout | None = SESSION_WRITE_TIMEOUT,
) -> Response:
    """Answer a GET or HEAD with the object at ``path`` (see
    :func:`msd_async.web.open_object` for ranges, conditional requests, redirects and the
    statuses). Return the response from the endpoint; the body streams with
    back-pressure and the upstream connection is released when the client goes away, or
    takes no data for ``write_timeout`` seconds (default the Session's
    ``Timeouts.write``; the ASGI server then cuts the connection). A client that leaves
    while the origin is being asked has that request cancelled and gets nothing."""
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
        return _ClientGone()
    if not reply.streamed:
        await reply.aclose()
    return response_for(reply)


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect as exc:
        raise UploadInterrupted("the client went away") from exc


async def accept_upload(
    request: Request,
    client: ContainerClient,
    path: str,
    *,
    streaming: bool = False,
    content_type: str | None = None,
    allowed_types: Collection[str] = (),
    cache_control: str | None = None,
) -> Response:
    """Stream the request body (``request.stream()``) into ``put_object`` without
    buffering it; see :func:`msd_async.web.store_upload` for limits (413),
    preconditions (412) and the answer (201/200 with the new ETag). A client that
    disconnects mid-body aborts the upload: nothing is stored. The stored Content-Type
    follows :func:`msd_async.web.stored_content_type`: ``content_type``, else the
    uploader's only if it matches ``allowed_types``, else the path's extension."""
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
    return response_for(reply)
