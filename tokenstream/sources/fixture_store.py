"""A directory of fixtures (``fixtures``): read whole at start-up, indexed by key, and
written to one file per recorded reply.

Every fixture is read and checked when the store is opened, so a corrupt or ambiguous file
stops start-up naming the file and the reason, instead of failing a request later. A
fixture recorded while the server runs joins the index at once (recording and replaying
into one directory answers a request from the upstream once, then from its fixture).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tokenstream.sources.fixtures import Fixture, FixtureError, fixture_text, read_fixture

__all__ = ["FIXTURE_SUFFIXES", "FixtureStore"]

FIXTURE_SUFFIXES = (".json", ".yaml", ".yml")
"""The files of a directory that are fixtures (others, and hidden files, are left alone)."""


class FixtureStore:
    """The fixtures of one directory, by key."""

    def __init__(self, directory: Path, fixtures: dict[str, Fixture] | None = None) -> None:
        self.directory = directory
        self._fixtures = dict(fixtures or {})

    def __len__(self) -> int:
        return len(self._fixtures)

    @classmethod
    def read(cls, directory: Path) -> FixtureStore:
        """Every fixture in ``directory``; ``FixtureError`` for the first that cannot be
        used, or when two answer the same request."""
        if not directory.is_dir():
            reason = "is not a directory" if directory.exists() else "no such directory"
            raise FixtureError(directory, f"{reason} (replay.dir, --replay)")
        fixtures: dict[str, Fixture] = {}
        for path in sorted(directory.iterdir()):
            if path.name.startswith(".") or path.suffix not in FIXTURE_SUFFIXES:
                continue
            fixture = read_fixture(path)
            other = fixtures.get(fixture.key)
            if other is not None:
                raise FixtureError(
                    path, f"answers the same request as {other.path}: remove one of them"
                )
            fixtures[fixture.key] = fixture
        return cls(directory, fixtures)

    @classmethod
    def for_recording(cls, directory: Path) -> FixtureStore:
        """An empty store writing to ``directory``, made if missing."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FixtureError(
                directory, f"cannot be made (record.dir, --record): {exc.strerror or exc}"
            ) from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise FixtureError(directory, "cannot be written to (record.dir, --record)")
        return cls(directory)

    def get(self, key: str) -> Fixture | None:
        return self._fixtures.get(key)

    def path_of(self, key: str) -> Path:
        """Where the fixture of ``key`` is written."""
        return self.directory / f"{key}.json"

    def add(self, fixture: Fixture) -> Fixture:
        """``fixture`` in the index, with the path ``write`` writes it to."""
        placed = Fixture(
            fixture.key, fixture.request, fixture.upstream_dialect, fixture.events,
            fixture.base_url, fixture.recorded_at, self.path_of(fixture.key),
        )
        self._fixtures[fixture.key] = placed
        return placed

    def write(self, fixture: Fixture) -> Path:
        """Write ``fixture`` to its file, whole or not at all (a new file renamed over the
        old one): a reader never sees half a fixture. Blocking: run it in a thread."""
        path = self.path_of(fixture.key)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{fixture.key}.", suffix=".tmp", dir=self.directory
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(fixture_text(fixture))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
