"""``segments serve``: the lookup API and the segment browser (``flink_jobs/service/app.py``),
served by uvicorn on ``serve.host:serve.port``."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, load_config

EXIT_OK, EXIT_USAGE = 0, 2


def add_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="the lookup API for websites and the segment browser for marketers, over HTTP",
        description="Serve customers' segments (GET /v1/customers/{id}/segments), every segment with its live size, "
        "and a segment browser at /, from the job's Redis and topics. Member listings and reasons need the token "
        "in SEGMENTS_SERVE_TOKEN (serve.token).",
    )
    serve.add_argument("--config", metavar="FILE", help="the job's settings file (Redis, Kafka, serve.*), as for the job")
    serve.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE", help="a setting, as for the job")
    serve.add_argument("--host", help="address to bind (default serve.host)")
    serve.add_argument("--port", type=int, help="port (default serve.port)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1; each reads the topics itself)")
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    argv = (["--config", args.config] if args.config else []) + [a for s in args.set for a in ("--set", s)]
    if args.host:
        argv += ["--set", f"serve.host={args.host}"]
    if args.port:
        argv += ["--set", f"serve.port={args.port}"]
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"error: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import uvicorn

    from ..service.app import create_app
    from ..service.live import Live

    print(
        f"segments serve: http://{config.serve.host}:{config.serve.port}/ (segment browser), /docs (API), "
        f"Redis {config.redis.url} prefix {config.redis.key_prefix}, Kafka {config.kafka.bootstrap}"
        + ("" if config.serve.token else "; no token set: member listings and reasons are refused (SEGMENTS_SERVE_TOKEN)"),
        flush=True,
    )
    if args.workers > 1:
        # Each worker builds its own app from the same settings (uvicorn imports the factory).
        import os

        os.environ["_SEGMENTS_SERVE_ARGV"] = "\x1f".join(argv)
        uvicorn.run(
            "flink_jobs.service.app:app_from_environment", factory=True, host=config.serve.host, port=config.serve.port,
            workers=args.workers, log_level="warning", access_log=False, loop="uvloop", http="httptools",
        )
    else:
        app = create_app(config, Live(config))
        uvicorn.run(app, host=config.serve.host, port=config.serve.port, log_level="warning", access_log=False, loop="uvloop", http="httptools")
    return EXIT_OK
