"""What the app keeps for its lifetime, under typed keys: the config, the shared state every
handler reads, and the metrics registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from tokenstream.config import Config
from tokenstream.engine.accounting import StreamStats
from tokenstream.engine.clock import TimerClock
from tokenstream.engine.events import ReplySource
from tokenstream.engine.faults import ChaosSequences
from tokenstream.engine.lateness import LatenessHistogram
from tokenstream.engine.registry import StreamRegistry
from tokenstream.engine.runner import Runner
from tokenstream.engine.tokenizer import Tokenizer
from tokenstream.server.auth import KeyChecker

__all__ = ["CONFIG", "METRICS", "STATE", "AppState"]


@dataclass(slots=True)
class AppState:
    config: Config
    tokenizer: Tokenizer
    sources: dict[str, ReplySource]
    clock: TimerClock
    stats: StreamStats
    lateness: LatenessHistogram
    streams: StreamRegistry
    runner: Runner
    keys: KeyChecker
    chaos: ChaosSequences = field(default_factory=ChaosSequences)
    """How many streams each chaos seed has served: the next one's faults."""


CONFIG = web.AppKey("config", Config)
STATE = web.AppKey("state", AppState)
METRICS = web.AppKey("metrics", CollectorRegistry)
