"""``msd serve``: the local MediaStore-compatible server, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from typing import Final

from . import _observe
from ._common import CommandError, cannot_listen, check_port, stdout_gone

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..config import Timeouts
    from ..rules import STANDARD_OBJECT_LIMIT, STREAMING_OBJECT_LIMIT, UPLOAD_TIME_LIMIT

    # The server's default (LocalMediaStore's send_time_limit), without loading aiohttp.web.
    send_time_limit = Timeouts().write

    p = commands.add_parser(
        "serve",
        help="run a local MediaStore-compatible server",
        description="Run a local MediaStore-compatible server. Prints the keys, 'endpoint: URL' "
        "once it accepts connections and an 'export ...' line with the environment a client "
        "needs, then one log line per request. SIGINT/SIGTERM stop it (exit status 0) "
        "within about 2 s: uploads still coming are dropped, responses still being sent then are "
        "cut.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    p.add_argument("--data-dir", help="keep objects in this directory (default: in memory)")
    p.add_argument("--region", default="us-east-1", help="SigV4 region (default us-east-1)")
    p.add_argument("--access-key-id", help="access key id clients sign with")
    p.add_argument("--secret-access-key", help="secret access key clients sign with")
    p.add_argument("--session-token", help="require this session token (temporary keys)")
    p.add_argument(
        "--container", default="local",
        help="container name: 1 to 255 letters, digits, _ or - (default local)",
    )
    p.add_argument(
        "--key-operations",
        action="append",
        default=[],
        metavar="KEY=OPERATION,...",
        help="limit the key KEY to these API operations, as an IAM policy would (e.g. "
        "an encoder's write-only key: KEY=PutObject,DeleteObject); others get 403 "
        "AccessDeniedException (repeatable)",
    )
    p.add_argument(
        "--allow-anonymous",
        action="append",
        choices=["read", "write"],
        default=[],
        help="accept unsigned reads or writes (repeatable)",
    )
    p.add_argument(
        "--standard-limit",
        type=int,
        default=STANDARD_OBJECT_LIMIT,
        help=f"largest STANDARD upload in bytes (default {STANDARD_OBJECT_LIMIT:,})",
    )
    p.add_argument(
        "--streaming-limit",
        type=int,
        default=STREAMING_OBJECT_LIMIT,
        help=f"largest STREAMING upload in bytes (default {STREAMING_OBJECT_LIMIT:,})",
    )
    p.add_argument(
        "--upload-time-limit",
        type=float,
        default=UPLOAD_TIME_LIMIT,
        help=f"seconds an upload may take before it is cancelled (default {UPLOAD_TIME_LIMIT:g})",
    )
    p.add_argument(
        "--send-time-limit",
        type=float,
        default=send_time_limit,
        metavar="SECONDS",
        help="seconds a client may take no data of a response before its connection is "
        f"closed (it stopped reading; default {send_time_limit:g}, 0: no limit)",
    )
    p.add_argument(
        "--idle-time-limit",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="close a connection that sends no whole request head for this long, from its "
        "start or its previous response (idle, or a head trickling in; default 60)",
    )
    p.add_argument("--no-fsync", action="store_true", help="do not fsync uploads (faster)")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of requests to fault")
    p.add_argument(
        "--fault-kinds",
        default="",
        help="comma-separated: 500,503,throttle,cut-upload,cut-download,delay (default all)",
    )
    p.add_argument(
        "--fault-seed", type=int, default=None, help="seed of the fault draw (reproducible runs)"
    )
    p.add_argument("--fault-delay", type=float, default=0.5, help="seconds for 'delay'")
    p.add_argument(
        "--cors-policy",
        metavar="FILE",
        help="a container CORS policy (JSON, as 'aws mediastore put-cors-policy' takes it): "
        "answer browsers' preflights and add CORS headers; reads still need "
        "--allow-anonymous read or a signature",
    )
    p.add_argument(
        "--ll-hls-blocking",
        action="store_true",
        help="LL-HLS blocking playlist reload: hold a playlist GET with _HLS_msn/_HLS_part "
        "until that segment or part is listed (an extension: MediaStore never had it)",
    )
    p.add_argument("--quiet", action="store_true", help="do not log requests")
    _observe.add_options(p)
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``msd serve``: run until SIGINT/SIGTERM; exit 0 on a clean stop."""
    # Imported here, not at the top: `msd --help` loads every command module.
    import asyncio
    import logging

    from ..credentials import Credentials
    from ..testing import DEFAULT_CREDENTIALS, FaultPlan, LocalMediaStore
    from ..testing.faults import FAULT_KINDS
    from ..testing.server import is_loopback

    if (args.access_key_id is None) != (args.secret_access_key is None):
        parser.error("--access-key-id and --secret-access-key go together")
    # Checked here for the options' words: the server's name its parameters (and None).
    if not args.send_time_limit >= 0:  # also NaN
        parser.error(
            f"--send-time-limit must be 0 (no limit) or more, not {args.send_time_limit:g}"
        )
    if not args.idle_time_limit > 0:
        parser.error(f"--idle-time-limit must be more than 0, not {args.idle_time_limit:g}")
    explicit = args.access_key_id is not None
    if not is_loopback(args.host) and not explicit:
        parser.error(
            f"refusing to listen on {args.host or 'every interface'} with the well-known "
            "default keys; give --access-key-id and --secret-access-key"
        )
    credentials = (
        Credentials(args.access_key_id, args.secret_access_key, args.session_token)
        if explicit
        else DEFAULT_CREDENTIALS
    )
    permissions: dict[str, list[str]] = {}
    for spec in args.key_operations:
        key, sep, operations = spec.partition("=")
        if not sep or not key.strip():
            parser.error(f"--key-operations takes KEY=OPERATION,..., not {spec!r}")
        permissions[key.strip()] = [o.strip() for o in operations.split(",") if o.strip()]
    problem = check_port(args.port)
    if problem is not None:
        parser.error(f"--port {problem}")
    if _observe.clashes(args.host, args.port, args.metrics):
        parser.error(f"--metrics {args.metrics} is the same address as the server's; give "
                     "--metrics another port")
    kinds = [k.strip() for k in args.fault_kinds.split(",") if k.strip()] or FAULT_KINDS
    args.registry = None
    try:
        faults = FaultPlan(
            rate=args.fault_rate, kinds=kinds, seed=args.fault_seed, delay=args.fault_delay
        )
    except ValueError as exc:
        parser.error(_in_options_words(exc))

    refused = _observe.check_options(args)
    if refused is not None:
        return refused
    on_request = None
    if args.metrics is not None:
        from prometheus_client import CollectorRegistry

        from ..prometheus import server_hook

        args.registry = CollectorRegistry()
        on_request = server_hook(args.registry)
    cors_policy = None
    if args.cors_policy is not None:
        from ..testing.cors import CorsPolicy, CorsPolicyError

        try:
            cors_policy = CorsPolicy.load(args.cors_policy)
        except CorsPolicyError as exc:
            print(f"msd serve: {exc}", file=sys.stderr)
            return 2

    access = logging.getLogger("msd_async.testing.access")
    try:
        server = LocalMediaStore(
            host=args.host,
            port=args.port,
            region=args.region,
            credentials=credentials,
            permissions=permissions,
            data_dir=args.data_dir,
            allow_anonymous=args.allow_anonymous,
            standard_limit=args.standard_limit,
            streaming_limit=args.streaming_limit,
            upload_time_limit=args.upload_time_limit,
            send_time_limit=args.send_time_limit or None,
            idle_time_limit=args.idle_time_limit,
            faults=faults,
            container=args.container,
            fsync=not args.no_fsync,
            access_logger=access,
            on_request=on_request,
            cors_policy=cors_policy,
            ll_hls_blocking=args.ll_hls_blocking,
        )
    except ValueError as exc:
        parser.error(_in_options_words(exc))
    # Only once every option is taken: a refused command leaves the process's logging as it
    # found it (main() runs in-process too, and basicConfig binds the root logger to the
    # sys.stderr of that moment for good).
    access.propagate = False
    if _observe.wants_json(args):
        handler = _observe.json_handler()
        logging.basicConfig(level=logging.WARNING, handlers=[_observe.json_handler()])
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s"
        )
    access.addHandler(handler)
    access.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        print(f"access key id: {credentials.access_key_id}", flush=True)
        if not explicit:
            print(f"secret access key: {credentials.secret_access_key}", flush=True)
        print(f"region: {args.region}", flush=True)
        asyncio.run(_serve(server, args))
    except (OSError, CommandError) as exc:
        if isinstance(exc, BrokenPipeError) and stdout_gone():
            # The reader of stdout went away (`msd serve | head -1`): stop quietly, as the
            # client commands do (docs/cli.md); the server was closed on the way out.
            return 0
        _observe.print_line(args, f"msd serve: {exc}", "failed", "error", file=sys.stderr,
                            error=str(exc))
        return 1
    return 0


#: The words of LocalMediaStore's and FaultPlan's errors (by rule) and the option that
#: gave the value: no option is spelled "standard_limit".
_OPTION_WORDS: Final = {
    "server.region": ("region", "--region"),
    "server.container": ("container", "--container"),
    "server.standard_limit": ("standard_limit", "--standard-limit"),
    "server.streaming_limit": ("streaming_limit", "--streaming-limit"),
    "server.upload_time_limit": ("upload_time_limit", "--upload-time-limit"),
    "faults.rate": ("fault rate", "--fault-rate"),
    "faults.delay": ("fault delay", "--fault-delay"),
    "faults.kinds": ("unknown fault kinds", "--fault-kinds: unknown fault kinds"),
}


def _in_options_words(exc: ValueError) -> str:
    words = _OPTION_WORDS.get(getattr(exc, "rule", ""))
    return str(exc) if words is None else str(exc).replace(*words, 1)


def _exports(server: object) -> str:
    """The shell line that points ``msd`` and AWS SDKs at this server, ready to paste."""
    import shlex

    from ..testing import LocalMediaStore

    assert isinstance(server, LocalMediaStore)
    keys = server.credentials
    env = {
        "MSD_ENDPOINT": server.endpoint,
        "AWS_ACCESS_KEY_ID": keys.access_key_id,
        "AWS_SECRET_ACCESS_KEY": keys.secret_access_key,
        "AWS_REGION": server.region,
    }
    if keys.session_token:
        env["AWS_SESSION_TOKEN"] = keys.session_token
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


async def _serve(server: object, args: argparse.Namespace) -> None:
    import asyncio
    import signal

    from .._listen import every_interface
    from ..testing import LocalMediaStore

    assert isinstance(server, LocalMediaStore)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await server.start()
        except OSError as exc:
            option = "--port" if args.port else "--host"
            value = str(args.port) if args.port else args.host
            raise cannot_listen(option, value, exc) from None
        async with _observe.observing(
            args, server_ready=lambda: bool(server.endpoint), registry=args.registry,
            stopping=stop.is_set,
        ):
            if every_interface(server.host):
                print(_observe.every_interface_line(server.port, "the server"), flush=True)
            print(f"endpoint: {server.endpoint}", flush=True)
            print(_exports(server), flush=True)
            await stop.wait()
            # Closed while --metrics still listens: for the close (up to its grace, for
            # responses still being sent) the server accepts no connection, which /readyz
            # says, and a scrape still sees its requests. Closed after, --metrics was gone
            # at once: /readyz and /healthz were refused for the whole close.
            await server.close()
    finally:
        await server.close()  # a failed start, an error: at once if already closed
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
