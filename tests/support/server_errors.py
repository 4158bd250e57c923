"""ERROR log records of the local server and of aiohttp's server side: a handler that
crashed. aiohttp's report of a request it could not parse (and answered with a 400) is the
client's fault, handled, and is left out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["ServerErrors", "watching_server_errors"]


class ServerErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        # aiohttp logs a request it could not parse at ERROR, then answers it with a 400.
        if record.name == "aiohttp.server" and isinstance(exc, HttpProcessingError):
            return
        self.records.append(record)


@contextlib.contextmanager
def watching_server_errors() -> Iterator[ServerErrors]:
    handler = ServerErrors()
    loggers = [logging.getLogger(n) for n in ("msd_async.testing", "aiohttp.server")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
