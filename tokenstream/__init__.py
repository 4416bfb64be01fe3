"""tokenstream: stream LLM-style replies token by token as server-sent events.

The pipeline, one module per stage: ``sources`` -> ``tokenizer`` -> ``pacer`` -> ``wire``
(formats) -> ``sse`` (encoding) -> ``transport``; ``app`` serves it over HTTP.
"""

from tokenstream.config import Config, load_config
from tokenstream.engine.clock import Clock, FakeClock, LoopClock
from tokenstream.engine.pacer import PacingProfile, Schedule
from tokenstream.engine.tokenizer import Piece, Tokenizer, load_encoding
from tokenstream.errors import ConfigError, RequestError, TokenizerError, TokenstreamError
from tokenstream.server.app import create_app
from tokenstream.sse.encoder import encode_event
from tokenstream.sse.parser import ServerSentEvent, SSEDecoder

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "Config",
    "ConfigError",
    "FakeClock",
    "LoopClock",
    "PacingProfile",
    "Piece",
    "RequestError",
    "SSEDecoder",
    "Schedule",
    "ServerSentEvent",
    "Tokenizer",
    "TokenizerError",
    "TokenstreamError",
    "__version__",
    "create_app",
    "encode_event",
    "load_config",
    "load_encoding",
]
