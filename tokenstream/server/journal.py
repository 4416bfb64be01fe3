"""The request journal: every request the server received, for a test to assert on.

An entry is written once per request, when it ends (the access log's ``on_end``): when it
came, its method, path, query and dialect, its headers with every credential redacted, its
body (up to ``control.max_journal_body_bytes``), the rule that answered it and its position
in its sequence, the fault it was given, its status and outcome, and the tokens sent. The
journal keeps the newest ``control.max_journal_entries`` entries; requests to the control
API itself are not in it.

A route tells the journal what only it knows (the dialect, the body, the rule) through the
request's ``RequestNote`` (``Journal.note``).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count
from typing import Any, Protocol

from aiohttp import web

from tokenstream.config import ReplyRule
from tokenstream.server.accesslog import RequestEnd
from tokenstream.sources.matching import TEST_ID_HEADER

__all__ = [
    "CONTROL_PREFIX", "REDACTED", "SECRET_HEADERS", "Journal", "JournalShare", "RequestNote",
]

CONTROL_PREFIX = "/_tokenstream/"

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "x-goog-api-key"}
)
"""Headers whose value the journal never keeps (lower case)."""

REDACTED = "[redacted]"


@dataclass(slots=True)
class RequestNote:
    """What the route knows about its request that the journal writes down."""

    dialect: str | None = None
    body: bytes | None = None
    """The body, cut at the journal's limit."""
    body_size: int = 0
    rule: ReplyRule | None = None
    call: int | None = None


_NOTE = web.RequestKey("tokenstream_journal_note", RequestNote)


@dataclass(frozen=True, slots=True)
class _Entry:
    number: int
    end: RequestEnd
    method: str
    path: str
    # the request's own read-only views, kept as they are: the copying and the redaction
    # are done when an entry is read, not on every request
    query: Mapping[str, str]
    headers: Mapping[str, str]
    test_id: str | None
    note: RequestNote | None

    def to_json(self) -> dict[str, Any]:
        note = self.note or RequestNote()
        rule = note.rule
        entry: dict[str, Any] = {
            "id": self.number,
            "time": datetime.fromtimestamp(self.end.received_at, UTC).isoformat(
                timespec="milliseconds"
            ),
            "method": self.method,
            "path": self.path,
            "query": dict(self.query.items()),
            "dialect": note.dialect,
            "test_id": self.test_id,
            "headers": _joined(_redacted(self.headers)),
            **_body_fields(note),
            "rule": None if rule is None else {
                "source": rule.origin, "index": rule.index, "name": rule.name,
            },
            "call": note.call,
            "fault": self.end.fault or None,
            "status": self.end.status,
            "outcome": self.end.outcome,
            "stream": self.end.stream,
            "tokens": self.end.tokens,
            "duration_ms": round(self.end.duration * 1000, 1),
        }
        return entry


def _joined(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a mapping; a header sent several times, its values joined as HTTP does."""
    joined: dict[str, str] = {}
    for name, value in headers:
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def _body_fields(note: RequestNote) -> dict[str, Any]:
    """The body as JSON when it is whole JSON; else its beginning as text, and its size."""
    if note.body is None:
        return {"body": None}
    if len(note.body) == note.body_size:
        try:
            return {"body": json.loads(note.body)}
        except ValueError:
            pass
    return {
        "body": note.body.decode("utf-8", "replace"),
        "body_truncated": len(note.body) < note.body_size,
        "body_bytes": note.body_size,
    }


def _redacted(headers: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    return (
        (name, REDACTED if name.lower() in SECRET_HEADERS else value)
        for name, value in headers.items()
    )


class JournalShare(Protocol):
    """A journal shared by the processes using one store (``redis_journal``); None from a
    read or a delete when the store cannot be reached (this process's own entries then)."""

    def push(self, entry: dict[str, Any]) -> None:
        """Add an entry (without its ``id``: the store numbers them); never waits."""
        ...

    async def entries(self, test_id: str | None, limit: int | None
                      ) -> list[dict[str, Any]] | None: ...

    async def clear(self, test_id: str | None) -> int | None: ...


class Journal:
    """The newest ``max_entries`` requests (none at all when it is 0)."""

    def __init__(self, max_entries: int, max_body_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_body_bytes = max_body_bytes
        self._entries: deque[_Entry] = deque(maxlen=max_entries)
        self._numbers = count(1)
        self.shared: JournalShare | None = None
        """Where every process's entries are read (``store: redis://``); this process
        keeps its own too, read when the store cannot be reached."""

    def __bool__(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def note(self, request: web.Request) -> RequestNote:
        """The request's note, for its route to fill in."""
        note = request.get(_NOTE)
        if note is None:
            note = request[_NOTE] = RequestNote()
        return note

    def keep_body(self, request: web.Request, body: bytes) -> None:
        if self:
            note = self.note(request)
            note.body = body[: self.max_body_bytes]
            note.body_size = len(body)

    def record(self, request: web.Request, end: RequestEnd) -> None:
        """The access log's ``on_end``: one entry for the request that ended."""
        if not self or request.path.startswith(CONTROL_PREFIX):
            return
        entry = _Entry(
            number=next(self._numbers),
            end=end,
            method=request.method,
            path=request.path,
            query=request.query,
            headers=request.headers,
            test_id=request.headers.get(TEST_ID_HEADER) or None,
            note=request.get(_NOTE),
        )
        self._entries.append(entry)
        if self.shared is not None:
            fields = entry.to_json()
            del fields["id"]
            self.shared.push(fields)

    async def read(self, test_id: str | None = None, limit: int | None = None
                   ) -> list[dict[str, Any]]:
        """``entries``, of every process sharing the store when there is one."""
        if self.shared is not None:
            shared = await self.shared.entries(test_id, limit)
            if shared is not None:
                return shared
        return self.entries(test_id, limit)

    async def delete(self, test_id: str | None = None) -> int:
        """``clear``, in the shared store too when there is one."""
        deleted = self.clear(test_id)
        if self.shared is not None:
            shared = await self.shared.clear(test_id)
            if shared is not None:
                return shared
        return deleted

    def entries(self, test_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The entries, oldest first: one test's (None: all), the newest ``limit``."""
        chosen = [e for e in self._entries if test_id is None or e.test_id == test_id]
        if limit is not None:
            chosen = chosen[len(chosen) - limit:] if limit else []
        return [entry.to_json() for entry in chosen]

    def clear(self, test_id: str | None = None) -> int:
        """Forget one test's entries (None: all); how many there were."""
        before = len(self._entries)
        if test_id is None:
            self._entries.clear()
        else:
            kept = [entry for entry in self._entries if entry.test_id != test_id]
            self._entries.clear()
            self._entries.extend(kept)
        return before - len(self._entries)
