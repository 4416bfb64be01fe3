"""tokenstream: stream LLM-style replies token by token as server-sent events.

The pipeline, one sub-package per layer: ``sources`` -> ``engine`` (tokenizer, pacer,
playout) -> ``dialects`` (wire formats) -> ``sse`` (encoding, transport); ``server`` serves
it over HTTP.

``import tokenstream`` imports none of them: each public name below is imported from its
module the first time it is used (PEP 562), so a client or the CLI does not pay for the
server (aiohttp, tiktoken, pydantic) unless it uses it.
"""

import importlib
import typing

if typing.TYPE_CHECKING:
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

_MODULE_OF: dict[str, str] = {
    "Clock": "tokenstream.engine.clock",
    "Config": "tokenstream.config",
    "ConfigError": "tokenstream.errors",
    "FakeClock": "tokenstream.engine.clock",
    "LoopClock": "tokenstream.engine.clock",
    "PacingProfile": "tokenstream.engine.pacer",
    "Piece": "tokenstream.engine.tokenizer",
    "RequestError": "tokenstream.errors",
    "SSEDecoder": "tokenstream.sse.parser",
    "Schedule": "tokenstream.engine.pacer",
    "ServerSentEvent": "tokenstream.sse.parser",
    "Tokenizer": "tokenstream.engine.tokenizer",
    "TokenizerError": "tokenstream.errors",
    "TokenstreamError": "tokenstream.errors",
    "create_app": "tokenstream.server.app",
    "encode_event": "tokenstream.sse.encoder",
    "load_config": "tokenstream.config",
    "load_encoding": "tokenstream.engine.tokenizer",
}
"""Where each public name lives (the imports above are for type checkers only)."""


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use and kept here after it."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
