"""The terminal client (``tokenstream stream``): streams a reply, prints it as it arrives and
measures its cadence at the client, from ``GET /v1/stream`` or a dialect's own endpoint."""

from tokenstream.client.dialect_stream import client_dialects, first_model, stream_dialect
from tokenstream.client.dialects import ReplyRequest
from tokenstream.client.query import stream_prompt
from tokenstream.client.summary import StreamSummary

__all__ = [
    "ReplyRequest",
    "StreamSummary",
    "client_dialects",
    "first_model",
    "stream_dialect",
    "stream_prompt",
]
