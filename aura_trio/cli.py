"""The `aura-trio` command: serve, token, demo."""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import sys
from functools import partial
from urllib.parse import quote

import trio

from .auth import mint_token
from .embedded_redis import EmbeddedRedisError, embedded_redis
from .logs import configure_logging
from .settings import ConfigError, Settings

log = logging.getLogger("aura_trio")

DEV_PROMPT = "please merge PR 42"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aura-trio", description="Streams agent sessions over SSE, with HITL approval."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server (port 9000 by default)")
    serve.add_argument("--host", help="bind address (AURA_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (AURA_PORT, default 9000; 0 picks one)")
    serve.add_argument("--workers", type=int, help="worker processes (AURA_WORKERS, default 1)")
    serve.add_argument(
        "--dev",
        action="store_true",
        help="without a secret, make an ephemeral one and print a curl line",
    )
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)

    token = commands.add_parser("token", help="print a JWT signed with the configured secret")
    token.add_argument("--sub", required=True, help="user id (the `sub` claim)")
    token.add_argument("--tenant", required=True, help="tenant id (the `tenant_id` claim)")
    token.add_argument("--role", help="the `role` claim")
    token.add_argument("--email", help="the `email` claim")
    token.add_argument(
        "--ttl", type=int, default=3600, help="seconds until it expires (default 3600)"
    )

    demo = commands.add_parser("demo", help="a full approval round trip on the embedded Redis")
    demo.add_argument("--reject", action="store_true", help="reject instead of approving")
    demo.add_argument(
        "--ws", action="store_true", help="over a WebSocket, approving on the same socket"
    )
    demo.add_argument(
        "--console",
        action="store_true",
        help="print the approval console's URL, leave the request to a person there,"
        " and serve until Ctrl-C",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "token":
            return _token(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(reject=args.reject, ws=args.ws, console=args.console)
        return _serve(args)
    except (ConfigError, EmbeddedRedisError) as error:
        print(f"aura-trio: {error}", file=sys.stderr)
        return 2


def _token(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    settings.check_secret()
    if args.ttl <= 0:
        raise ConfigError("--ttl must be positive")
    print(
        mint_token(
            settings.secret,
            sub=args.sub,
            tenant_id=args.tenant,
            role=args.role,
            email=args.email,
            ttl_seconds=args.ttl,
        )
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env(host=args.host, port=args.port, workers=args.workers)
    configure_logging(settings.log_level, worker=args.worker_index)
    if args.workers is not None and args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if not settings.secret and args.dev and args.worker_index is None:
        settings = settings.replace(secret=secrets.token_urlsafe(48))
        log.warning("--dev: using an ephemeral JWT secret; tokens die with this process")
    settings.check_secret()
    with contextlib.ExitStack() as stack:
        if settings.redis_url is None and not settings.sentinel_mode:
            settings = settings.replace(redis_url=stack.enter_context(embedded_redis()))
            log.info("no REDIS_URL: started an embedded Redis-protocol server")
        if settings.workers > 1 and args.worker_index is None:
            from .supervisor import Supervisor

            banner = partial(_print_dev_banner, settings) if args.dev else None
            return Supervisor(settings).run(on_ready=banner)
        return trio.run(_serve_one, settings, args.dev and args.worker_index is None)


async def _serve_one(settings: Settings, dev: bool) -> int:
    from .app import create_app
    from .collector import freeze_start_up_objects
    from .http.runner import serve_until_signal

    app = create_app(settings)
    freeze_start_up_objects()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_until_signal, app)
        log.info("listening on %s", " ".join(binds), extra={"bind": binds})
        if dev:
            _print_dev_banner(settings, int(binds[0].rsplit(":", 1)[1]))
    log.info("stopped")
    return 0


def _print_dev_banner(settings: Settings, port: int) -> None:
    token = mint_token(
        settings.secret, sub="dev-user", tenant_id="dev-tenant", ttl_seconds=8 * 3600
    )
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = f"http://{host}:{port}"
    print(
        "\nDev mode. Open a stream that asks for approval:\n"
        f"  curl -N -H 'Authorization: Bearer {token}' "
        f"'{base}/aura/test/stream?message={quote(DEV_PROMPT)}'\n"
        "then approve the requestId its `hitl` event names:\n"
        f"  curl -X POST -H 'Authorization: Bearer {token}' {base}/aura/hitl/approve/<requestId>\n"
        "or decide it in the approval console:\n"
        f"  {base}/aura/console#token={token}\n",
        file=sys.stderr,
        flush=True,
    )
