"""Loading: one YAML file, merged onto the embedded defaults and validated at start-up.

A file only needs the keys it changes: mappings are merged key by key onto the defaults
(so a file can add a profile and keep the built-in ones), lists and scalars replace them.
Any problem stops start-up with a ``ConfigError`` naming the file, the key and the reason.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from tokenstream.config.settings import Config
from tokenstream.config.upstream import ca_context
from tokenstream.errors import ConfigError

__all__ = ["embedded_defaults", "load_config", "validate_mapping"]


def embedded_defaults() -> Config:
    return Config()


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = "unknown key (check its spelling and where it is nested)"
        problems.append((key, reason))
    return problems


def validate_mapping(data: dict[str, Any], source: str, base_dir: Path = Path(".")) -> Config:
    """Validate a config mapping merged onto the defaults; raise ``ConfigError`` on problems."""
    defaults_dump = embedded_defaults().model_dump(mode="json", exclude={"base_dir"})
    merged = _deep_merge(defaults_dump, data)
    if "profiles" in data and isinstance(data["profiles"], dict):
        # a profile given in the file is whole: fields it omits take the field defaults,
        # not the values of a built-in profile of the same name
        merged["profiles"] = {**defaults_dump["profiles"], **data["profiles"]}
    try:
        config = Config.model_validate({**merged, "base_dir": base_dir})
        config.reply_rules()
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None
    return _with_fixture_dirs(_with_ca_file(config, source))


def _with_fixture_dirs(config: Config) -> Config:
    """``record.dir`` and ``replay.dir`` resolved relative to the config file (they are
    checked when the app is made: the fixtures are read then)."""
    record, replay = config.record, config.replay
    if record.dir is not None:
        record = record.model_copy(update={"dir": config.base_dir / record.dir})
    if replay.dir is not None:
        replay = replay.model_copy(update={"dir": config.base_dir / replay.dir})
    return config.model_copy(update={"record": record, "replay": replay})


def _with_ca_file(config: Config, source: str) -> Config:
    """``upstream.ca_file`` resolved relative to the config file, and checked at start-up."""
    ca_file = config.upstream.ca_file
    if ca_file is None:
        return config
    path = config.base_dir / ca_file
    try:
        ca_context(path)
    except ValueError as exc:
        raise ConfigError(source, [("upstream.ca_file", str(exc))]) from None
    upstream = config.upstream.model_copy(update={"ca_file": path})
    return config.model_copy(update={"upstream": upstream})


def load_config(path: str | Path | None = None) -> Config:
    """Load ``path`` (YAML) onto the embedded defaults, or the defaults alone when None."""
    if path is None:
        return embedded_defaults()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [("(file)", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [("(file)", str(exc))]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [(where, f"not valid YAML: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("(top level)", "must be a mapping of sections")])
    return validate_mapping(data, str(path), path.parent)
