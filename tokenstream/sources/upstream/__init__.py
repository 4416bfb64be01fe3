"""The upstream source: an OpenAI-compatible model's streamed chat completion, as reply
events (``client`` asks, ``reply`` reads, ``answers`` maps what comes back, ``connection``
sets up how the upstream is reached)."""

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
