"""Faults: the ways a model stream misbehaves, as a compact spec (pure: parse and describe).

A spec is one or more faults separated by commas; each is ``KIND[:ARG[:ARG]][@WHEN]``:

==============================  ==========================================================
``error:STATUS@WHEN``           an error: before the stream (``@0``, the default) an HTTP
                                error with the dialect's body (429 with ``Retry-After`` and
                                ``x-ratelimit-*``; 529 is Anthropic's ``overloaded_error``);
                                later, the dialect's in-stream error event, then its ending
``truncate@WHEN``               the connection closes cleanly, without the stream's ending
``reset@WHEN``                  the connection is reset (TCP RST)
``stall:DURATION@WHEN``         nothing for DURATION, heartbeats as configured;
``stall:DURATION:silent@WHEN``  the same without heartbeats
``malformed@WHEN``              one event whose data is not valid JSON
``duplicate@WHEN``              one event sent twice
``slow_headers:DURATION``       nothing at all (not even headers) for DURATION
==============================  ==========================================================

WHEN is a token count (``@40``: after 40 tokens of the reply) or a time since the stream
started (``@2.5s``, ``@800ms``). DURATION is a time (``5s``, ``250ms``).

Seeded chaos (``parse_chaos``: ``seed=7,error=0.1,truncate=0.05``) draws faults at random
with a chance per kind; the k-th stream under one seed gets the same faults in every run.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FAULT_KINDS",
    "Chaos",
    "ChaosSequences",
    "Fault",
    "FaultKind",
    "FaultSpecError",
    "When",
    "parse_chaos",
    "parse_faults",
]

FaultKind = Literal["error", "truncate", "reset", "stall", "malformed", "duplicate",
                    "slow_headers"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "error", "truncate", "reset", "stall", "malformed", "duplicate", "slow_headers"
)

MAX_DURATION_S = 3600.0
"""The longest stall or header delay a spec may ask for."""


class FaultSpecError(ValueError):
    """A fault spec that cannot be read; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class When:
    """Where in the stream a fault happens: after ``tokens`` tokens, or ``seconds`` after the
    stream started (exactly one is set)."""

    tokens: int | None = None
    seconds: float | None = None

    @property
    def at_start(self) -> bool:
        return self.tokens == 0 or self.seconds == 0

    def __str__(self) -> str:
        if self.tokens is not None:
            return str(self.tokens)
        return f"{self.seconds:g}s"


START = When(tokens=0)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    when: When = START
    status: int | None = None
    """``error``: the HTTP status (or the in-stream error's kind, after the start)."""
    duration: float | None = None
    """``stall``, ``slow_headers``: seconds."""
    heartbeats: bool = True
    """``stall``: heartbeats go on during the stall (off with ``:silent``)."""

    def __str__(self) -> str:
        """The spec that parses back to this fault."""
        head: str = self.kind
        if self.status is not None:
            head += f":{self.status}"
        if self.duration is not None:
            head += f":{self.duration:g}s"
        if not self.heartbeats:
            head += ":silent"
        return head if self.kind == "slow_headers" else f"{head}@{self.when}"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|ms)$")


def _duration(text: str, where: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise FaultSpecError(
            f"{where}: {text!r} is not a duration; write seconds or milliseconds, e.g. 5s, 250ms"
        )
    seconds = float(match[1]) / (1000.0 if match[2] == "ms" else 1.0)
    if seconds > MAX_DURATION_S:
        raise FaultSpecError(f"{where}: {text} is longer than {MAX_DURATION_S:g} s")
    return seconds


def _when(text: str, where: str) -> When:
    if text.isdigit():
        tokens = int(text)
        if tokens > 10_000_000:
            raise FaultSpecError(f"{where}: @{text} is more tokens than any reply has")
        return When(tokens=tokens)
    try:
        return When(seconds=_duration(text, where))
    except FaultSpecError:
        raise FaultSpecError(
            f"{where}: @{text} is neither a token count (@40) nor a time (@2.5s, @800ms)"
        ) from None


def _one(text: str) -> Fault:
    where = f"fault {text!r}"
    head, at, when_text = text.partition("@")
    name, *args = head.split(":")
    kind = next((known for known in FAULT_KINDS if known == name), None)
    if kind is None:
        raise FaultSpecError(
            f"{where}: unknown kind {name!r}; the kinds are {', '.join(FAULT_KINDS)}"
        )
    if at and kind == "slow_headers":
        raise FaultSpecError(f"{where}: slow_headers happens before anything: it takes no @")
    if at and not when_text:
        raise FaultSpecError(f"{where}: nothing after @; give a token count or a time")
    when = _when(when_text, where) if at else START
    if kind == "error":
        if len(args) != 1 or not args[0].isdigit() or not 400 <= int(args[0]) <= 599:
            raise FaultSpecError(f"{where}: give the error's HTTP status, 400-599: error:429@0")
        return Fault("error", when, status=int(args[0]))
    if kind in ("stall", "slow_headers"):
        silent = kind == "stall" and args[1:] == ["silent"]
        if not args or len(args) > (2 if kind == "stall" else 1) or (len(args) == 2 and not silent):
            usage = "stall:5s@10 or stall:5s:silent@10" if kind == "stall" else "slow_headers:3s"
            raise FaultSpecError(f"{where}: give the duration: {usage}")
        return Fault(kind, when, duration=_duration(args[0], where), heartbeats=not silent)
    if args:
        raise FaultSpecError(f"{where}: {kind} takes no argument: {kind}@12")
    return Fault(kind, when)


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """The faults of a spec (``error:500@40``, ``stall:2s@5,truncate@30``)."""
    parts = [part.strip() for part in spec.split(",")]
    if not spec.strip() or not all(parts):
        raise FaultSpecError(f"fault spec {spec!r} is empty or has an empty part")
    faults = tuple(_one(part) for part in parts)
    before = [fault for fault in faults if fault.kind == "error" and fault.when.at_start]
    if len(before) > 1:
        raise FaultSpecError(f"fault spec {spec!r}: only one error can answer the request")
    return faults


# -- seeded chaos ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chaos:
    """Faults drawn at random, each kind with its probability, from a seeded sequence: the
    k-th stream under one seed gets the same faults in every run."""

    seed: int
    chances: tuple[tuple[FaultKind, float], ...]

    def __str__(self) -> str:
        return ",".join([f"seed={self.seed}", *(f"{kind}={p:g}" for kind, p in self.chances)])

    def draw(self, number: int) -> tuple[Fault, ...]:
        """The faults of the ``number``-th stream (0, 1, ...) under this chaos."""
        rng = random.Random(f"{self.seed}:{number}")
        faults: list[Fault] = []
        for kind, chance in self.chances:
            # every kind takes the same draws whether it fires or not: a change of one
            # kind's chance leaves the others' sequence as it was
            fires = rng.random() < chance
            tokens = rng.randint(1, 40)
            status = rng.choice(_CHAOS_STATUSES)
            seconds = round(rng.uniform(0.5, 3.0), 1)
            before_the_stream = rng.random() < 0.5
            if not fires:
                continue
            if kind == "error":
                when = START if before_the_stream else When(tokens=tokens)
                faults.append(Fault("error", when, status=status))
            elif kind in ("stall", "slow_headers"):
                when = START if kind == "slow_headers" else When(tokens=tokens)
                faults.append(Fault(kind, when, duration=seconds))
            else:
                faults.append(Fault(kind, When(tokens=tokens)))
        return tuple(faults)


_CHAOS_STATUSES = (429, 500, 503)


def parse_chaos(spec: str) -> Chaos:
    """``seed=7,error=0.1,truncate=0.05``: a seed and a chance (0-1) per fault kind."""
    seed: int | None = None
    chances: dict[FaultKind, float] = {}
    for part in spec.split(","):
        name, equals, value = part.strip().partition("=")
        if not equals:
            raise FaultSpecError(f"chaos {spec!r}: write name=value pairs, e.g. seed=7,error=0.1")
        if name == "seed":
            try:
                seed = int(value)
            except ValueError:
                raise FaultSpecError(f"chaos {spec!r}: seed={value!r} is not an integer") from None
            continue
        kind = next((known for known in FAULT_KINDS if known == name), None)
        if kind is None:
            raise FaultSpecError(
                f"chaos {spec!r}: unknown kind {name!r}; the kinds are {', '.join(FAULT_KINDS)}"
            )
        try:
            chance = float(value)
        except ValueError:
            chance = -1.0
        if not 0.0 <= chance <= 1.0:
            raise FaultSpecError(f"chaos {spec!r}: {name}={value} is not a chance from 0 to 1")
        chances[kind] = chance
    if seed is None:
        raise FaultSpecError(f"chaos {spec!r}: give a seed (seed=7), so a run can be repeated")
    if not chances:
        raise FaultSpecError(f"chaos {spec!r}: give at least one kind's chance, e.g. error=0.1")
    return Chaos(seed, tuple((kind, chances[kind]) for kind in FAULT_KINDS if kind in chances))


class ChaosSequences:
    """How many streams each chaos seed has served (per process): the next one's number."""

    def __init__(self, max_seeds: int = 1024) -> None:
        self._served: dict[int, int] = {}
        self._max_seeds = max_seeds

    def draw(self, chaos: Chaos) -> tuple[Fault, ...]:
        number = self._served.pop(chaos.seed, 0)
        if len(self._served) >= self._max_seeds:  # the seed served longest ago is forgotten
            del self._served[next(iter(self._served))]
        self._served[chaos.seed] = number + 1
        return chaos.draw(number)
