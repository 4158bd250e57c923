"""Serve and accept MediaStore objects over HTTP: the framework-neutral core.

:func:`open_object` decides the answer to a GET or HEAD (ranges, conditional requests,
redirects, origin errors as statuses) and streams the body; :func:`store_upload` streams a
request body into ``put_object``. Thin adapters copy the result onto a framework's
response: :mod:`msd_async.web.aiohttp` (aiohttp.web) and :mod:`msd_async.web.asgi`
(Starlette/FastAPI, the ``msd-async[web]`` extra; imported only when you import it).
See ``docs/web.md``.
"""

from __future__ import annotations

from .core import (
    REASONS,
    REQUEST_HEADERS,
    SESSION_WRITE_TIMEOUT,
    ClientStalled,
    Reply,
    SessionTimeout,
    UploadInterrupted,
    WriteWatch,
    check_upload_length,
    error_reply,
    open_object,
    status_for_error,
    store_upload,
    stored_content_type,
    watch_writes,
)
from .http import (
    CONDITIONAL_HEADERS,
    Decision,
    Validators,
    evaluate_preconditions,
    format_http_date,
    parse_http_date,
    parse_range,
    quote_etag,
    resolve_range,
)

__all__ = [
    "CONDITIONAL_HEADERS",
    "REASONS",
    "REQUEST_HEADERS",
    "SESSION_WRITE_TIMEOUT",
    "ClientStalled",
    "Decision",
    "Reply",
    "SessionTimeout",
    "UploadInterrupted",
    "Validators",
    "WriteWatch",
    "check_upload_length",
    "error_reply",
    "evaluate_preconditions",
    "format_http_date",
    "open_object",
    "parse_http_date",
    "parse_range",
    "quote_etag",
    "resolve_range",
    "status_for_error",
    "store_upload",
    "stored_content_type",
    "watch_writes",
]
