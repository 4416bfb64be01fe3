"""What every dialect shares: the pacing overrides a request may carry, the profile they
resolve to, and validation errors turned into ``InvalidRequest`` naming the parameter
(``validated``, ``validated_json``).

The overrides come from a body's ``tokenstream`` object or from a query; a profile is named
there, or by the ``X-Tokenstream-Profile`` header, else the config's default applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenstream.config import Config
from tokenstream.engine.faults import (
    ChaosSequences,
    Fault,
    FaultSpecError,
    parse_chaos,
    parse_faults,
)
from tokenstream.engine.pacer import PacingProfile
from tokenstream.errors import InvalidRequest

__all__ = [
    "NO_OVERRIDES",
    "PACING_FIELDS",
    "PacingOverrides",
    "SourceName",
    "invalid_request",
    "parse_overrides",
    "resolve_faults",
    "resolve_profile",
    "validated",
    "validated_json",
]

SourceName = Literal["scripted", "echo", "upstream"]

_Model = TypeVar("_Model", bound=BaseModel)


class PacingOverrides(BaseModel):
    """Profile choice and per-field overrides of a ``PacingProfile``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    profile: str | None = Field(default=None, max_length=64)
    source: SourceName | None = None
    # each a field of PacingProfile, validated by it once the overrides are applied
    tokens_per_second: float | None = None
    ttft_ms: float | None = None
    jitter: float | None = None
    seed: int | None = None
    chunk_tokens: int | None = None
    pause_ms: float | None = None
    newline_pause_ms: float | None = None
    max_buffer_ms: float | None = None
    # faults (engine/faults.py): validated by the profile's validators when applied
    fault: str | None = None
    chaos: str | None = None


PACING_FIELDS = tuple(name for name in PacingProfile.model_fields if name != "description")
"""The fields a request may override: every field of a profile but its description (a
request's ``fault`` and ``chaos`` are validated as the profile's are)."""

NO_OVERRIDES = PacingOverrides()
"""A request that overrides nothing (shared: the model is frozen)."""


def invalid_request(error: ValidationError, prefix: str = "") -> InvalidRequest:
    """The first problem pydantic found, as the 400 that names its parameter."""
    item = error.errors(include_url=False)[0]
    param = prefix + ".".join(str(part) for part in item["loc"])
    if item["type"] == "json_invalid":
        return InvalidRequest(
            f"The request body is not valid JSON: {item['msg']}", code="invalid_json"
        )
    if item["type"] == "extra_forbidden":
        return InvalidRequest(
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    if item["type"] == "missing":
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if item["type"] == "model_type" and not item["loc"]:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    return InvalidRequest(
        f"Invalid value for '{param}': {item['msg']}.", param=param, code="invalid_value"
    )


def validated(model: type[_Model], value: Any, prefix: str = "") -> _Model:
    """``value`` as ``model``, or the 400 that names the first problem (its parameter after
    ``prefix``)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise invalid_request(exc, prefix) from None


def validated_json(model: type[_Model], body: bytes) -> _Model:
    """A request body as ``model``, or the 400 that names the first problem."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def parse_overrides(value: Any, prefix: str = "tokenstream.") -> PacingOverrides:
    """A body's ``tokenstream`` object (None: no overrides)."""
    if value is None:
        return NO_OVERRIDES
    return validated(PacingOverrides, value or {}, prefix)


def resolve_profile(
    config: Config,
    overrides: PacingOverrides,
    header_profile: str | None = None,
    prefix: str = "",
    default: str | None = None,
) -> PacingProfile:
    """The named profile (body/query, then header, then ``default`` or the config's default)
    with per-field overrides."""
    name = overrides.profile or header_profile or default or config.default_profile
    profile = config.profiles.get(name)
    if profile is None:
        param = f"{prefix}profile" if overrides.profile else "X-Tokenstream-Profile"
        raise InvalidRequest(
            f"Unknown profile '{name}' in '{param}'. "
            f"Available profiles: {', '.join(sorted(config.profiles))}.",
            param=param,
            code="profile_not_found",
        )
    given = overrides.model_fields_set
    changes = {field: getattr(overrides, field) for field in PACING_FIELDS if field in given}
    if not changes:
        return profile
    try:
        return _overridden(profile, tuple(changes.items()))
    except ValidationError as exc:
        raise invalid_request(exc, prefix) from None


@lru_cache(maxsize=256)
def _overridden(profile: PacingProfile, changes: tuple[tuple[str, Any], ...]) -> PacingProfile:
    # Profiles are frozen: streams asking for the same overrides share one (a profile is
    # about 1 KiB, kept for as long as its stream is open).
    return PacingProfile.model_validate({**profile.model_dump(), **dict(changes)})


def resolve_faults(
    overrides: PacingOverrides,
    profile: PacingProfile,
    headers: Mapping[str, str],
    chaos: ChaosSequences,
    rule_fault: str | None = None,
) -> tuple[Fault, ...]:
    """The faults injected into one reply: the request's (``tokenstream.fault`` or
    ``fault=``), else the ``X-Tokenstream-Fault`` header's, else the matched rule's, else
    the profile's; when none is named, seeded chaos in the same order (drawn from
    ``chaos``, the app's sequences)."""
    header = headers.get("X-Tokenstream-Fault")
    header_chaos = headers.get("X-Tokenstream-Chaos")
    try:
        named = overrides.fault or header or rule_fault or profile.fault
        if named:
            return parse_faults(named)
        chaos_spec = overrides.chaos or header_chaos or profile.chaos
        return chaos.draw(parse_chaos(chaos_spec)) if chaos_spec else ()
    except FaultSpecError as exc:  # (the request's own were checked with the profile)
        param = "X-Tokenstream-Fault" if header else "X-Tokenstream-Chaos"
        raise InvalidRequest(f"Invalid value for '{param}': {exc}.", param=param,
                             code="invalid_value") from None
