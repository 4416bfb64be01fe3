"""``tokenstream serve``: the config with the command line's flags, then one server, a
supervisor and its workers (``--workers N``), or one worker (``--worker``).

What the server needs is imported when the command runs, so that ``tokenstream --help``
and ``tokenstream stream`` stay light."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tokenstream import __version__

if TYPE_CHECKING:
    from aiohttp import web
    from pydantic import BaseModel

    from tokenstream.config import Config

__all__ = ["serve_command"]

_Section = TypeVar("_Section", bound="BaseModel")


def serve_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``tokenstream serve``: one server, or the supervisor of ``--workers N``."""
    from pydantic import ValidationError

    from tokenstream.config import UpstreamConfig, load_config
    from tokenstream.engine.clock import LoopClock
    from tokenstream.errors import ConfigError, TokenstreamError
    from tokenstream.server.app import STATE, create_app
    from tokenstream.server.auth import public_bind_warning
    from tokenstream.server.serve import serve

    try:
        config = load_config(args.config)
        server = config.server.model_copy(
            update={
                key: value
                for key, value in (("host", args.host), ("port", args.port))
                if value is not None
            }
        )
        config = config.model_copy(update={"server": server})
        if args.upstream is not None:
            try:
                upstream = UpstreamConfig.model_validate(
                    {**config.upstream.model_dump(), "base_url": args.upstream}
                )
            except ValidationError as exc:
                reason = exc.errors(include_url=False)[0]["msg"]
                raise ConfigError("--upstream", [("upstream.base_url", reason)]) from None
            config = config.model_copy(update={"upstream": upstream})
        if args.profile is not None:
            if args.profile not in config.profiles:
                print(
                    f"tokenstream: unknown profile {args.profile!r} for --profile; "
                    f"available: {', '.join(sorted(config.profiles))}",
                    file=sys.stderr,
                )
                return 2
            upstream = config.upstream.model_copy(update={"profile": args.profile})
            config = config.model_copy(
                update={"default_profile": args.profile, "upstream": upstream}
            )
        config = _with_record_replay(config, args)
        loop_name, loop_factory = _loop_factory(args.loop)
        if args.workers is not None and args.worker is None:
            return _supervise(args, argv, config, loop_name)
        worker_index = args.worker[0] if args.worker is not None else 0
        app = create_app(config, clock=LoopClock() if args.clock == "loop" else None,
                         worker_index=worker_index)
    except TokenstreamError as exc:
        print(f"tokenstream: {exc}", file=sys.stderr)
        return 2

    who = "" if args.worker is None else f"worker {worker_index} "
    logging.basicConfig(
        level=args.log_level or server.log_level,
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
    )
    if args.worker is not None:  # the supervisor has warned and will announce
        return _serve_as_worker(app, args.worker[1], server.host, server.port, args.backlog,
                                loop_factory)
    # an API key or a header is never logged: the access log writes its own fields only
    warning = public_bind_warning(server.host, has_keys=bool(app[STATE].keys))
    if warning:
        print(warning, file=sys.stderr, flush=True)

    # SIGTERM/SIGINT: stop accepting, let streams finish (server.shutdown_grace_s), exit 0
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(
                serve(app, host=server.host, port=server.port,
                      announce=lambda urls: _announce(config, urls, loop_name),
                      backlog=args.backlog)
            )
    except OSError as exc:  # the address is taken or cannot be bound
        print(f"tokenstream: cannot listen on {server.host}:{server.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _announce(config: Config, urls: list[str], loop_name: str, workers: str = "") -> None:
    server = config.server
    base = urls[0] if urls else f"http://{server.host}:{server.port}"
    query = "prompt=hello"
    if config.upstream.base_url is not None:
        what = f"proxying {config.upstream.base_url} (profile {config.upstream.profile})"
        if config.upstream.model is None:
            query += "&model=MODEL"
    else:
        what = f"default profile {config.default_profile}"
    print(
        f"tokenstream {__version__} serving on {', '.join(urls)} ({what}; {loop_name}{workers})"
        f"\n  demo page: {base}/\n  try: curl -N '{base}/v1/stream?{query}'",
        flush=True,
    )
    if config.replay.dir is not None:
        print(f"  replaying fixtures from {config.replay.dir} "
              f"(on a miss: {config.replay.on_miss})", flush=True)
    if config.record.dir is not None:
        print(f"  recording upstream replies into {config.record.dir}", flush=True)


def _supervise(args: argparse.Namespace, argv: Sequence[str], config: Config,
               loop_name: str) -> int:
    """``serve --workers N``: start N workers (this command line, each with ``--worker``)."""
    import os

    from tokenstream.server.auth import load_api_keys, public_bind_warning
    from tokenstream.server.serve import url_of
    from tokenstream.server.supervisor import Supervisor, reserve_port

    server = config.server
    logging.basicConfig(
        level=args.log_level or server.log_level,
        format="%(asctime)s %(levelname)s supervisor %(name)s: %(message)s",
    )
    warning = public_bind_warning(server.host, has_keys=bool(load_api_keys(config, os.environ)))
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        reserved = reserve_port(server.host, server.port)
    except OSError as exc:
        print(f"tokenstream: cannot listen on {server.host}:{server.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    with reserved:
        port = reserved.getsockname()[1]  # port 0 becomes one port for every worker

        def command(index: int, fd: int) -> list[str]:
            return [sys.executable, "-m", "tokenstream", *argv,
                    "--port", str(port), "--worker", f"{index}:{fd}"]

        supervisor = Supervisor(
            args.workers, command,
            announce=lambda: _announce(config, [url_of((server.host, port))], loop_name,
                                       f"; {args.workers} workers"),
        )
        return asyncio.run(supervisor.run())


def _serve_as_worker(app: web.Application, fd: int, host: str, port: int, backlog: int,
                     loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> int:
    """One worker of ``serve --workers N``: its supervisor stops it and reports its exit."""
    import socket

    from tokenstream.server.serve import serve

    with socket.socket(fileno=fd) as supervisor, \
            asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(app, host=host, port=port, backlog=backlog, reuse_port=True,
                         supervisor=supervisor))
    return 0


def _with_record_replay(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with the ``--record`` and ``--replay*`` flags applied and checked."""
    from tokenstream.config import record_replay_problems
    from tokenstream.errors import ConfigError

    record = _flags_onto(config.record, "record", {"dir": args.record})
    replay = _flags_onto(config.replay, "replay", {
        "dir": args.replay, "speed": args.replay_speed, "on_miss": args.replay_on_miss,
        "profile": args.replay_profile,
    })
    problems = record_replay_problems(
        record, replay, upstream_base_url=config.upstream.base_url, profiles=config.profiles
    )
    if problems:
        raise ConfigError("the command line", problems)
    return config.model_copy(update={"record": record, "replay": replay})


def _flags_onto(section: _Section, name: str, flags: dict[str, Any]) -> _Section:
    """The config ``section`` called ``name`` with the flags given (not None) set in it."""
    from pydantic import ValidationError

    from tokenstream.errors import ConfigError

    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return section
    try:
        return section.model_validate({**section.model_dump(), **given})
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join([name, *(str(part) for part in error["loc"])])
        raise ConfigError("the command line", [(key, error["msg"])]) from None


def _loop_factory(name: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The event loop to serve on, by name: ``auto`` is uvloop if it can be imported."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "auto":
                return "asyncio", asyncio.new_event_loop
            from tokenstream.errors import TokenstreamError

            raise TokenstreamError(
                "--loop uvloop needs the uvloop package: pip install 'tokenstream[uvloop]'"
            ) from None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return "uvloop", factory
    return "asyncio", asyncio.new_event_loop
