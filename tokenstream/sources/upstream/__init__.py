"""The upstream source: a model server's streamed reply (OpenAI chat completions, OpenAI
Responses or Anthropic Messages), as reply events (``client`` asks, ``reply`` reads,
``answers`` maps what comes back, ``wire`` holds what differs between the dialects,
``connection`` sets up how the upstream is reached)."""

from tokenstream.sources.upstream.answers import error_from_response, forwarded_headers
from tokenstream.sources.upstream.client import UPSTREAM, PendingAnswer, UpstreamClient
from tokenstream.sources.upstream.reply import UpstreamReply

__all__ = [
    "UPSTREAM",
    "PendingAnswer",
    "UpstreamClient",
    "UpstreamReply",
    "error_from_response",
    "forwarded_headers",
]
