"""Pacing overrides: every profile field a request may change, validated by the profile."""

from __future__ import annotations

import pytest

from tokenstream.config import Config
from tokenstream.dialects.overrides import (
    PACING_FIELDS,
    PacingOverrides,
    parse_overrides,
    resolve_profile,
)
from tokenstream.engine.pacer import PacingProfile
from tokenstream.errors import InvalidRequest


def test_every_profile_field_but_its_description_can_be_overridden() -> None:
    assert set(PACING_FIELDS) == set(PacingProfile.model_fields) - {"description"}
    assert set(PACING_FIELDS) <= set(PacingOverrides.model_fields)


def test_an_override_is_validated_by_the_profile_and_named_in_the_error() -> None:
    config = Config()
    overrides = parse_overrides({"tokens_per_second": 20, "jitter": 0})
    profile = resolve_profile(config, overrides)
    assert (profile.tokens_per_second, profile.jitter) == (20, 0)
    with pytest.raises(InvalidRequest) as caught:
        resolve_profile(config, parse_overrides({"jitter": 99}), prefix="tokenstream.")
    assert caught.value.param == "tokenstream.jitter"
    with pytest.raises(InvalidRequest) as unknown:
        parse_overrides({"warp": 9})
    assert unknown.value.param == "tokenstream.warp"
