"""Listening sockets for every address of a host name, all on one port.

The local server (``msd serve``), the relay (``msd relay --listen``) and the ``--metrics``
listener bind through here. asyncio's ``create_server`` binds each address of a name to
a port of its own when the port is 0 (``localhost`` on a dual-stack host: ``::1`` and
``127.0.0.1``): the one port printed then reached a single family, and a client that
resolved the name to the other found nothing there, or another program's port.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["PORT_TRIES", "bind_all", "every_interface", "listen", "serve_sockets", "url_host"]

logger = logging.getLogger("msd_async.listen")

#: Tries at one free port for every address of a name (port 0), each taken on one of them.
PORT_TRIES: Final = 8
#: The backlog each socket listens with (asyncio's create_server default).
_BACKLOG: Final = 100


def every_interface(host: str | None) -> bool:
    """Whether listening on ``host`` listens on every interface (of a family): ``None``
    or ``""`` (both families, as for asyncio), ``0.0.0.0``, ``::``."""
    if not host:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def url_host(host: str | None) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets, and every interface as
    the loopback address among them (``http://:PORT`` opens nothing, and browsers refuse
    ``http://0.0.0.0:PORT``)."""
    if every_interface(host):
        return "[::1]" if host and ":" in host else "127.0.0.1"
    assert host is not None
    return f"[{host}]" if ":" in host else host


async def listen(host: str | None, port: int) -> list[socket.socket]:
    """Sockets bound to every address of ``host``, all on one port, listening.

    Port 0 is the first address's free port, taken on the others too (another free one is
    tried when it is taken there, :data:`PORT_TRIES` times). ``None`` or ``""`` is every
    interface, as for asyncio. An address family the host lacks is skipped, as asyncio
    does, and so is an address the machine does not have (EADDRNOTAVAIL; logged as a
    warning) when another address of the name is bound; an IPv6 address listens on IPv6
    only. Raises ``OSError`` (``socket.gaierror`` for a name that does not resolve), with
    no socket left open."""
    import asyncio

    try:
        # An address (or every interface) needs no lookup: as asyncio, no thread for it,
        # which a default executor busy with a program's blocking work would hold up.
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM,
            flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST,
        )
    except socket.gaierror:  # a name
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    addresses = list(dict.fromkeys((info[0], info[4]) for info in infos))
    return bind_all(addresses, port)


def bind_all(
    addresses: Sequence[tuple[socket.AddressFamily, Sequence[Any]]], port: int
) -> list[socket.socket]:
    """``addresses`` (family, sockaddr; their ports ignored) bound and listening on
    ``port``, or on one free port for them all when ``port`` is 0 (see :func:`listen`)."""
    for attempt in range(PORT_TRIES):
        bound: list[socket.socket] = []
        chosen = port
        missing: OSError | None = None
        try:
            for family, sockaddr in addresses:
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError:
                    continue  # a family this host lacks (no IPv6): as asyncio, skipped
                bound.append(sock)
                if os.name == "posix":  # as asyncio's create_server: restart at once
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # Else ``::`` would take the IPv4 port as well, and 0.0.0.0 then fail.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                where = (sockaddr[0], chosen, *sockaddr[2:])
                try:
                    sock.bind(where)
                    # Now, not when served: a port bound but not listening elsewhere does
                    # not refuse a bind (SO_REUSEADDR), only a listen.
                    sock.listen(_BACKLOG)
                except OSError as exc:
                    # asyncio's words, which name the address (the OS's do not).
                    reason = (exc.strerror or str(exc)).lower()
                    error = OSError(
                        exc.errno, f"error while attempting to bind on address "
                        f"{where[:2]!r}: {reason}"
                    )
                    if exc.errno != errno.EADDRNOTAVAIL:
                        raise error from None
                    # An address of the name this machine does not have: ``::1`` of
                    # localhost where IPv6 is off, as in many containers. The name's other
                    # addresses serve it (a client that resolves it tries them all);
                    # asyncio refused to listen at all (CPython gh-75128).
                    bound.remove(sock)
                    sock.close()
                    missing = error
                    continue
                chosen = sock.getsockname()[1]
            if not bound:
                raise missing or OSError(
                    errno.EAFNOSUPPORT, "no address of a family this host has"
                )
            if missing is not None:
                logger.warning("%s; listening on the name's other addresses", missing)
            return bound
        except OSError as exc:
            for sock in bound:
                sock.close()
            taken_elsewhere = exc.errno == errno.EADDRINUSE and len(bound) > 1
            if port != 0 or not taken_elsewhere or attempt == PORT_TRIES - 1:
                raise
    raise AssertionError("unreachable")  # the last try returned or raised


async def serve_sockets(runner: Any, sockets: list[socket.socket]) -> None:
    """Serve ``runner`` (an aiohttp ``AppRunner``, set up) on ``sockets`` (from
    :func:`listen`). On failure the sockets not served yet are closed too; the caller
    cleans the runner up, which closes those served."""
    from aiohttp import web

    try:
        for sock in sockets:
            await web.SockSite(runner, sock).start()
    except BaseException:
        for sock in sockets:  # closing one served already too is harmless
            sock.close()
        raise
