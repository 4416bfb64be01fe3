"""tokenstream: stream LLM-style replies token by token as server-sent events.

The pipeline, one module per stage: ``sources`` -> ``tokenizer`` -> ``pacer`` -> ``wire``
(formats) -> ``sse`` (encoding) -> ``transport``; ``app`` serves it over HTTP.
"""

from tokenstream.app import create_app
from tokenstream.clock import Clock, FakeClock, LoopClock
from tokenstream.config import Config, load_config
from tokenstream.errors import ConfigError, RequestError, TokenizerError, TokenstreamError
from tokenstream.pacer import PacingProfile, Schedule, pace
from tokenstream.sse import encode_event
from tokenstream.sse_parser import ServerSentEvent, SSEDecoder
from tokenstream.tokenizer import Piece, Tokenizer, load_encoding

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
    "pace",
]
