"""The command line's arguments: ``tokenstream serve`` and ``tokenstream stream``."""

from __future__ import annotations

import argparse

from tokenstream import __version__
from tokenstream.dialects.catalog import DIALECTS

__all__ = ["DEFAULT_URL", "build_parser"]

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
