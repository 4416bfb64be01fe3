"""``record`` and ``replay``: upstream replies stored as fixture files, and answered from them
(docs/UPSTREAM.md, "Record and replay")."""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from tokenstream.config.base import StrictModel

__all__ = ["OnMiss", "RecordConfig", "ReplayConfig", "record_replay_problems"]

OnMiss = Literal["upstream", "default", "fail"]
"""What answers a request no fixture matches: the upstream, the scripted source (as without
an upstream), or a 404 naming the fixture looked for."""


class RecordConfig(StrictModel):
    """Each upstream reply read whole is stored as one fixture file."""

    dir: Path | None = Field(
        default=None,
        description="directory the fixtures are written to (made if missing), relative to the "
        "config file; null = no recording; needs upstream.base_url",
    )


class ReplayConfig(StrictModel):
    """Requests that match a fixture are answered from it, in any client dialect."""

    dir: Path | None = Field(
        default=None,
        description="directory of fixtures, read at start-up, relative to the config file; "
        "null = no replay",
    )
    on_miss: OnMiss = Field(
        default="fail",
        description="a request no fixture matches: upstream (needs upstream.base_url), "
        "default (the scripted reply; not with upstream.base_url) or fail (404)",
    )
    speed: float = Field(
        default=1.0, gt=0, le=1000, description="recorded timing: 2 = twice as fast"
    )
    profile: str | None = Field(
        default=None,
        description="re-pace replayed replies with this profile instead of the recorded timing",
    )

    @field_validator("speed")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


def record_replay_problems(
    record: RecordConfig,
    replay: ReplayConfig,
    *,
    upstream_base_url: str | None,
    profiles: Collection[str],
) -> list[tuple[str, str]]:
    """What does not fit together in ``record``, ``replay`` and the rest of the config, as
    ``(key, reason)`` pairs (a config file's validation and the command line's)."""
    problems = []
    if record.dir is not None and upstream_base_url is None:
        problems.append(
            ("record.dir", "recording needs an upstream to record: set upstream.base_url "
             "(--upstream)")
        )
    if replay.dir is not None:
        if replay.on_miss == "upstream" and upstream_base_url is None:
            problems.append(
                ("replay.on_miss", "'upstream' needs upstream.base_url (--upstream); or use "
                 "'default' (the scripted reply) or 'fail'")
            )
        if replay.on_miss == "default" and upstream_base_url is not None:
            problems.append(
                ("replay.on_miss", "'default' (the scripted reply) is not used with "
                 "upstream.base_url set, which answers every request; use 'upstream' or "
                 "'fail'")
            )
    if replay.profile is not None and replay.profile not in profiles:
        problems.append(
            ("replay.profile", f"{replay.profile!r} is not among the profiles "
             f"({', '.join(sorted(profiles))})")
        )
    return problems
