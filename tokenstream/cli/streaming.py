"""``tokenstream stream``: ask a running server for one reply and show it in the terminal
(``tokenstream.client``), imported when the command runs."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:

    from tokenstream.client import StreamSummary
    from tokenstream.client.terminal import TerminalView
    from tokenstream.sse.parser import ServerSentEvent

__all__ = ["stream_command"]


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


def stream_command(args: argparse.Namespace) -> int:
    """``tokenstream stream``: one reply from a server, shown as it arrives."""
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
