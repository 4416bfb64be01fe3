"""Where streams live beyond their connection: the resumable streams' settings (``resume:``)
and the store they and the other shared state are kept in (``store:``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field

from tokenstream.config.base import StrictModel

__all__ = ["ResumeConfig", "store_problem"]


class ResumeConfig(StrictModel):
    """Resumable streams (docs/RELIABILITY.md): a reconnect with ``Last-Event-ID`` gets the
    events it missed, then the rest."""

    enabled_scripted: bool = Field(
        default=True, description="scripted, echo and replayed replies can be resumed"
    )
    enabled_upstream: bool = Field(
        default=False,
        description="upstream replies can be resumed (the upstream request goes on after "
        "the client left, for linger_s: it is billed)",
    )
    ttl_s: float = Field(
        default=300.0, gt=0, le=86_400, description="a log is kept this long after its stream ended"
    )
    linger_s: float = Field(
        default=30.0, ge=0, le=3600,
        description="a reply goes on this long after its client left, then it is cancelled",
    )
    max_streams: int = Field(
        default=1000, ge=1, le=10_000_000,
        description="logs kept at most; the oldest finished one is dropped first",
    )
    max_events_per_stream: int = Field(
        default=100_000, ge=1, le=10_000_000, description="of each stream, the newest"
    )
    max_bytes_per_stream: int = Field(
        default=1_048_576, ge=1024, le=1_073_741_824,
        description="of each stream, the newest",
    )
    max_bytes: int = Field(
        default=134_217_728, ge=1024, le=68_719_476_736,
        description="every log together; over it, finished logs go first, then the oldest "
        "running logs' oldest events",
    )


def store_problem(value: str) -> str | None:
    """Why ``value`` is not a ``store:`` setting (``memory`` or ``redis://HOST:PORT/DB``)."""
    if value == "memory":
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss"):
        return "is 'memory' or a Redis URL: redis://HOST:PORT/DB (or rediss:// for TLS)"
    try:
        port = parts.port
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    if not parts.hostname:
        return "names no host (redis://HOST:PORT/DB)"
    if port is None:
        return "names no port (redis://HOST:PORT/DB)"
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        return f"has a database that is not a number: {database!r}"
    if parts.query or parts.fragment:
        return "has a query or fragment (redis://HOST:PORT/DB, no more)"
    return None
