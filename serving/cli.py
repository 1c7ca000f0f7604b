"""``python -m serving`` / ``zoo serve``: flags (over ``O365ZOO_SERVE_*`` environment variables) into a server."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cli_common import Parser, add_download_flags, run_cli, use_download_flags

from .config import BACKENDS, ENV_PREFIX, LOG_FORMATS, ServingConfig

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

log = logging.getLogger("serving")

_FLAG_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float, "Path": Path,
               "Path | None": Path, "str": str, "str | None": str}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m serving",
        description="Serve objects365-zoo models over HTTP: POST /v1/detect, /v1/segment, /v1/detect:visualize; "
                    "GET /v1/models, /healthz, /readyz, /metrics, and a demo page at /. Every flag can also be set "
                    f"with an environment variable {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}BACKEND=onnxruntime).",
    )
    for f in fields(ServingConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{f.metadata['help']} (default: {default})"
        if f.name == "models":
            parser.add_argument("--model", dest="models", action="append", metavar="NAME",
                                help=f"{f.metadata['help']}; repeat to serve several (default: {default[0]})")
        elif f.name == "pretrained":
            parser.add_argument("--random-weights", dest="pretrained", action="store_const", const=False,
                                help="serve randomly initialised models (benchmarks and tests: no download)")
        elif f.name == "backend":
            parser.add_argument(flag, choices=BACKENDS, help=help_text)
        elif f.name == "triton_protocol":
            parser.add_argument(flag, choices=("http", "grpc"), help=help_text)
        elif f.name == "log_format":
            parser.add_argument(flag, choices=LOG_FORMATS, help=help_text)
        else:
            parser.add_argument(flag, type=_FLAG_TYPES[str(f.type)], help=help_text)
    add_download_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, load the models and serve until SIGINT/SIGTERM; returns the exit status (an expected failure:
    one line on stderr and 2; models that cannot load: 1)."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    debug = args.pop("debug", False)
    use_download_flags(args.pop("mirror"), args.pop("offline"))
    return run_cli(parser.prog, lambda: _serve(args), debug=debug, extra="serving")


def _serve(args: dict) -> int:
    import uvicorn

    from . import logs
    from .app import create_app

    config = ServingConfig.from_env(**args)
    logs.configure(config.log_level, config.log_format)
    _check_models(config)
    sock = _listen(config.host, config.port)
    if config.backend == "torch" or config.threads:
        import torch

        # Always set, even to the default: left unset, new threads size torch's OpenMP pool from MKL's dynamic
        # thread count, and on 2 cores the server's latency fell at times into a 2-3x slower mode (seen in 2 of 5
        # runs of the demo model, in none of 6 with the count set).
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
    app = create_app(config)
    log.info("starting", extra={"models": config.models, "backend": config.backend, "host": config.host,
                                "port": config.port})
    server = uvicorn.Server(uvicorn_config(app, config))
    state = app.state.serving
    state.on_load_error = lambda: setattr(server, "should_exit", True)
    server.run(sockets=[sock])
    if state.load_error is not None:
        print(f"error: could not load the models: {state.load_error}", file=sys.stderr)
        return 1
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the models load: a port in use fails at once."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart reuses a port in TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}; stop what uses it or choose "
                                 f"another --port (or {ENV_PREFIX}PORT)") from None
    return sock


def uvicorn_config(app: ASGIApp, config: ServingConfig) -> uvicorn.Config:
    """uvicorn's settings for the app: address, connection limit, keep-alive, header and body deadlines, no
    WebSockets (the API has none), logs through the app's logging (JSON or text)."""
    import uvicorn

    from .limits import deadline_protocol

    return uvicorn.Config(
        app, host=config.host, port=config.port, log_config=None, access_log=False, lifespan="on", ws="none",
        http=deadline_protocol(config.header_timeout_s, config.body_timeout_s),
        limit_concurrency=config.max_connections, timeout_keep_alive=config.keep_alive_s,
        timeout_graceful_shutdown=int(config.shutdown_timeout_s))


def _check_models(config: ServingConfig) -> None:
    """Fail fast, before the server binds, on a model name the zoo does not know."""
    import zoo

    for name in config.models:
        if not (name.endswith(".safetensors") and Path(name).is_file()):
            try:
                zoo.get_spec(name)
            except LookupError as exc:  # zoo.UnknownModelError, with close names
                raise SystemExit(f"error: {exc.args[0]}") from None
