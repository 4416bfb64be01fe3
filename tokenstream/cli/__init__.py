"""Command line: ``tokenstream serve`` (``serving``) and ``tokenstream stream``
(``streaming``), their arguments in ``arguments``.

Each command imports what it uses when it runs: ``tokenstream --help`` loads neither the
server nor the HTTP client."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tokenstream.cli.arguments import build_parser
from tokenstream.cli.serving import serve_command
from tokenstream.cli.streaming import stream_command

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve_command(args, argv)
    return stream_command(args)
