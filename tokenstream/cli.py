"""Command line: ``tokenstream serve`` and ``tokenstream stream``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tokenstream import __version__
from tokenstream.dialects.catalog import DIALECTS

if TYPE_CHECKING:
    from aiohttp import web
    from pydantic import BaseModel

    from tokenstream.client import StreamSummary
    from tokenstream.client.terminal import TerminalView
    from tokenstream.config import Config
    from tokenstream.sse.parser import ServerSentEvent

__all__ = ["main"]

_Section = TypeVar("_Section", bound="BaseModel")

DEFAULT_URL = "http://127.0.0.1:8080"


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def _worker_count(value: str) -> int:
    count = int(value)
    if count < 1:
        raise argparse.ArgumentTypeError(f"workers must be at least 1, got {count}")
    return count


def _worker_slot(value: str) -> tuple[int, int]:
    index, _, fd = value.partition(":")
    return int(index), int(fd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenstream",
        description="Stream LLM-style replies token by token as server-sent events.",
    )
    parser.add_argument("--version", action="version", version=f"tokenstream {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", metavar="FILE", help="YAML config (default: embedded)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default 8080)")
    serve.add_argument("--profile", help="default pacing profile")
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="forward chat completions to this OpenAI-compatible API root, e.g. "
        "https://api.openai.com/v1 (key from $OPENAI_API_KEY, see upstream.api_key_env)",
    )
    serve.add_argument(
        "--record", metavar="DIR",
        help="store each upstream reply as a fixture file in DIR (made if missing); needs "
        "--upstream (record.dir)",
    )
    serve.add_argument(
        "--replay", metavar="DIR",
        help="answer requests that match a fixture in DIR from it, in any dialect (replay.dir)",
    )
    serve.add_argument(
        "--replay-speed", type=float, metavar="X",
        help="play the recorded timing X times as fast (replay.speed, default 1)",
    )
    serve.add_argument(
        "--replay-on-miss", choices=["upstream", "default", "fail"],
        help="a request no fixture matches: proxied to --upstream, the scripted reply, or a "
        "404 (replay.on_miss, default fail)",
    )
    serve.add_argument(
        "--replay-profile", metavar="NAME",
        help="re-pace replayed replies with this profile instead of their recorded timing "
        "(replay.profile)",
    )
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="default: server.log_level (INFO)")
    serve.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                       help="event loop: uvloop when it is installed (auto, the default), "
                       "else asyncio; uvloop: pip install 'tokenstream[uvloop]'")
    serve.add_argument("--clock", choices=["bucket", "loop"], default="bucket",
                       help="pacing timers: one per millisecond shared by all streams "
                       "(bucket, default) or one per sleeping stream (loop, for comparison)")
    serve.add_argument("--backlog", type=int, default=1024,
                       help="pending connections the listening socket queues (default 1024)")
    serve.add_argument("--workers", type=_worker_count, metavar="N",
                       help="run N worker processes on the one port (SO_REUSEPORT, Linux), "
                       "restart any that dies, stop them all gracefully on SIGTERM/SIGINT; "
                       "/metrics adds every worker up (default: one process, no supervisor)")
    # set by the supervisor on each worker's command line: "INDEX:FD" (FD: its socket to it)
    serve.add_argument("--worker", type=_worker_slot, help=argparse.SUPPRESS)

    stream = commands.add_parser(
        "stream",
        help="stream a reply to the terminal and measure it",
        description="Stream a reply and print it as it arrives, with a summary measured at "
        "the client on stderr. Without --dialect it reads GET /v1/stream (JSON events, which "
        "say how many tokens each carries); with --dialect it POSTs to that API's endpoint "
        "and reads its events, as the API's own clients do.",
    )
    stream.add_argument("prompt")
    stream.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
    stream.add_argument(
        "--dialect",
        choices=list(DIALECTS),
        help="POST to this API's endpoint and read its events; reasoning and tool calls are "
        "shown on stderr (default: GET /v1/stream)",
    )
    stream.add_argument("--raw", action="store_true",
                        help="print the events as they arrive instead of the text")
    stream.add_argument("--profile", help="pacing profile")
    stream.add_argument("--tokens-per-second", type=float)
    stream.add_argument("--ttft-ms", type=float)
    stream.add_argument("--jitter", type=float)
    stream.add_argument("--seed", type=int)
    stream.add_argument("--source", choices=["scripted", "echo", "upstream"])
    stream.add_argument("--max-tokens", type=int,
                        help="cut the reply (Anthropic requires a limit: without this, --dialect "
                        "anthropic asks for more than any scripted reply needs)")
    stream.add_argument("--model", help="model name (default: the server's first, from "
                        "/v1/models; needed through an upstream without upstream.model)")
    return parser


def _serve(args: argparse.Namespace, argv: Sequence[str]) -> int:
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


def _pacing(args: argparse.Namespace) -> dict[str, Any]:
    """The pacing choices given on the command line, by their API names."""
    return {
        key: value
        for key, value in (
            ("profile", args.profile),
            ("tokens_per_second", args.tokens_per_second),
            ("ttft_ms", args.ttft_ms),
            ("jitter", args.jitter),
            ("seed", args.seed),
            ("source", args.source),
        )
        if value is not None
    }


def _stream(args: argparse.Namespace) -> int:
    import aiohttp

    from tokenstream.client.terminal import TerminalView, format_event

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def aside(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    view = TerminalView(lambda _: None, lambda _: None) if args.raw else TerminalView(write, aside)
    raw: Callable[[ServerSentEvent], None] | None = (
        (lambda event: write(format_event(event))) if args.raw else None
    )
    try:
        summary = asyncio.run(_stream_reply(args, view, raw))
    except (OSError, aiohttp.ClientError) as exc:
        print(f"tokenstream: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    except LookupError as exc:  # no model name
        print(f"tokenstream: {exc}", file=sys.stderr)
        return 1
    view.close()
    if summary.error and not summary.events:  # refused, or ended before any of the reply
        print(f"tokenstream: {summary.error}", file=sys.stderr)
        return 1
    if not args.raw:
        print(file=sys.stdout)
    print(summary.describe(), file=sys.stderr)
    return 1 if summary.error else 0


async def _stream_reply(
    args: argparse.Namespace,
    view: TerminalView,
    raw: Callable[[ServerSentEvent], None] | None,
) -> StreamSummary:
    import aiohttp

    from tokenstream.client import ReplyRequest, first_model, stream_dialect, stream_prompt
    from tokenstream.engine.events import TextDelta

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        url = args.url.rstrip("/")
        pacing = _pacing(args)
        if args.dialect is None:
            params = {key: str(value) for key, value in pacing.items()}
            for key, value in (("max_tokens", args.max_tokens), ("model", args.model)):
                if value is not None:
                    params[key] = str(value)
            return await stream_prompt(
                url, args.prompt, params, lambda text: view.show(TextDelta(text)), raw=raw,
                session=http,
            )
        model = args.model or await first_model(http, url)
        request = ReplyRequest(args.prompt, model, args.max_tokens, pacing)
        return await stream_dialect(url, args.dialect, request, view.show, raw=raw, session=http)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args, argv)
    return _stream(args)
