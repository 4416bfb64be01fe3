"""What the app keeps for its lifetime, under typed keys: the config, the shared state every
handler reads, and the metrics export."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from tokenstream.config import Config
from tokenstream.engine.accounting import StreamStats
from tokenstream.engine.clock import TimerClock
from tokenstream.engine.faults import ChaosSequences
from tokenstream.engine.lateness import LatenessHistogram
from tokenstream.engine.registry import StreamRegistry
from tokenstream.engine.runner import Runner
from tokenstream.engine.tokenizer import Tokenizer
from tokenstream.server.auth import KeyChecker
from tokenstream.server.journal import Journal
from tokenstream.server.metrics import MetricsExport
from tokenstream.sources.scripted import ScriptedSource, ScriptSource

__all__ = ["CONFIG", "METRICS", "STATE", "AppState"]


@dataclass(slots=True)
class AppState:
    config: Config
    tokenizer: Tokenizer
    sources: dict[str, ScriptSource]
    """The sources whose reply is all there at the start, by name (the upstream is apart)."""
    clock: TimerClock
    stats: StreamStats
    lateness: LatenessHistogram
    streams: StreamRegistry
    runner: Runner
    keys: KeyChecker
    scripted: ScriptedSource
    """``sources["scripted"]``, whose run-time rules the control API changes."""
    journal: Journal
    worker_index: int | None = 0
    """Which of ``serve --workers N`` this process is (0 when alone; None under gunicorn,
    which numbers no workers)."""
    chaos: ChaosSequences = field(default_factory=ChaosSequences)
    """How many streams each chaos seed has served: the next one's faults."""


CONFIG = web.AppKey("config", Config)
STATE = web.AppKey("state", AppState)
METRICS = web.AppKey("metrics", MetricsExport)
