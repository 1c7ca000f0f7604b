"""``python -m serving`` / ``zoo serve``: flags (over ``O365ZOO_SERVE_*`` environment variables) into a server."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.cli_common import Parser, add_download_flags, run_cli, use_download_flags

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

    from .config import ServingConfig

log = logging.getLogger("serving")
PROG = "python -m serving"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """One flag per setting of :class:`~serving.config.ServingConfig` (its description, variable and default in the
    help), then the download flags."""
    from .config import ENV_PREFIX, ServingConfig, env_var, flag_of

    parser = Parser(
        prog=prog,
        description="Serve objects365-zoo models over HTTP: POST /v1/detect, /v1/segment, /v1/detect:visualize; "
                    "GET /v1/models, /healthz, /readyz, /metrics, and a demo page at /. Every flag can also be set "
                    f"with an environment variable {ENV_PREFIX}<SETTING> (named in its help; flags win).",
    )
    for name, field in ServingConfig.model_fields.items():
        flag = flag_of(name)
        default = field.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, list) else "unset" if default is None else default
        help_text = f"{field.description} [env {env_var(name)}; default: {shown}]"
        kind = _value_type(field.annotation)
        if flag.const is not None:
            parser.add_argument(flag.name, dest=name, action="store_const", const=flag.const, help=help_text)
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag.name, dest=name, action="append", metavar=flag.metavar, help=help_text)
        elif typing.get_origin(kind) is typing.Literal:
            parser.add_argument(flag.name, dest=name, choices=typing.get_args(kind), help=help_text)
        else:
            parser.add_argument(flag.name, dest=name, type=kind, metavar=flag.metavar, help=help_text)
    add_download_flags(parser)
    return parser


def _value_type(annotation: Any) -> Any:
    """``X`` of ``X | None``; other annotations as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Parse ``argv``, load the models and serve until SIGINT/SIGTERM; returns the exit status (an expected failure:
    one line on stderr and 2, a missing extra among them; models that cannot load: 1). ``prog`` names the command
    in messages (``zoo serve`` when run as the ``zoo`` plugin)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_cli(prog, lambda: _parse_and_serve(argv, prog), debug="--debug" in argv, extra="serving")


def _parse_and_serve(argv: list[str], prog: str) -> int:
    args = vars(build_parser(prog).parse_args(argv))
    args.pop("debug", None)
    use_download_flags(args.pop("mirror"), args.pop("offline"))
    return _serve(args)


def _serve(args: dict) -> int:
    import uvicorn

    from . import logs
    from .app import create_app
    from .config import load_config

    config = load_config(**args)
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
    from .config import env_var

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart reuses a port in TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}; stop what uses it or choose "
                                 f"another --port (or {env_var('port')})") from None
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
